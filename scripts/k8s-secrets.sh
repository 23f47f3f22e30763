#!/usr/bin/env bash
# Create the Secrets the imgsearch manifests mount (the manual path; docs/security.md).
#
#   scripts/k8s-secrets.sh [--namespace imgsearch] [--dir ./imgsearch-secrets] [--no-certs] [--print]
#                          [--external-milvus TOKEN_FILE CA_FILE]
#
# Makes, under --dir (mode 0700, every file 0600; keep it safe or delete what
# you do not need once applied):
#   - a private CA and, for each service, a TLS key and certificate signed by it
#     (Secrets imgsearch-{embedder,search,search-client,web,redis,milvus}-tls, each
#     with tls.crt, tls.key, ca.crt); skipped with --no-certs, when cert-manager
#     issues them (the cert-manager component);
#   - one bearer token per scope for the clients (search.token, write.token,
#     admin.token) and the principals file of their SHA-256 hashes (Secret
#     imgsearch-search-principals, key principals.txt);
#   - the Redis password (Secret imgsearch-redis: key password for Search, key
#     users.acl with only the password's SHA-256 for Redis);
#   - the Milvus root password (Secret imgsearch-milvus: root-password, and token
#     = root:PASSWORD for Search); with --external-milvus (the external-milvus
#     overlay), that Secret holds your Milvus's credentials (token: user:password
#     or an API key) and the CA of its certificate (ca.crt) instead.
# Existing files in --dir are kept (re-running re-issues only the certificates),
# so tokens and passwords stay valid. Values go to kubectl as files, never as
# command-line arguments. --print writes the Secret manifests to stdout instead
# of applying them (nothing needs a cluster then).
#
# Needs openssl and kubectl.
set -euo pipefail

namespace=imgsearch
dir=./imgsearch-secrets
certs=1
print=0
milvus_token=
milvus_ca=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --namespace) namespace=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --no-certs) certs=0; shift ;;
    --print) print=1; shift ;;
    --external-milvus) milvus_token=$2; milvus_ca=$3; shift 3 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "k8s-secrets: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for tool in openssl kubectl; do
  command -v "$tool" >/dev/null || { echo "k8s-secrets: $tool is needed" >&2; exit 1; }
done

umask 077
mkdir -p "$dir"
chmod 700 "$dir"
first=1

# emit NAME TYPE KEY=FILE...: the Secret, applied (or printed with --print).
emit() {
  local name=$1 type=$2
  shift 2
  local args=()
  for pair in "$@"; do args+=("--from-file=$pair"); done
  local manifest
  manifest=$(kubectl create secret generic "$name" --namespace "$namespace" --type "$type" \
    "${args[@]}" --dry-run=client -o yaml)
  if [[ $print == 1 ]]; then
    [[ $first == 1 ]] || echo "---"
    printf '%s\n' "$manifest"
  else
    printf '%s\n' "$manifest" | kubectl apply -f - >&2
  fi
  first=0
}

sha256_of_file() {  # the hex SHA-256 of a one-line secret file, without its newline
  tr -d '\n' <"$1" | openssl dgst -sha256 -r | cut -d' ' -f1
}

keep_or_make() {  # FILE COMMAND...: run COMMAND into FILE unless FILE already holds something
  local file=$1
  shift
  [[ -s $file ]] || "$@" >"$file"
}

random_token() { printf 'imgs_%s\n' "$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n')"; }
random_hex() { openssl rand -hex 32; }

issue() {  # STEM USAGE NAMES...: key and certificate signed by the CA (names: DNS or IP:x)
  local stem=$1 usage=$2
  shift 2
  local sans=() name
  for name in "$@"; do
    if [[ $name == IP:* ]]; then sans+=("$name"); else sans+=("DNS:$name"); fi
  done
  local ext="$dir/$stem.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$usage"
    echo "subjectAltName=$(IFS=,; echo "${sans[*]}")"
  } >"$ext"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$stem.key" 2>/dev/null
  openssl req -new -key "$dir/$stem.key" -subj "/O=imgsearch/CN=${1#IP:}" -out "$dir/$stem.csr"
  openssl x509 -req -in "$dir/$stem.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 90 -sha256 -extfile "$ext" -out "$dir/$stem.crt" 2>/dev/null
  rm -f "$dir/$stem.csr" "$ext"
  emit "imgsearch-$stem-tls" kubernetes.io/tls \
    "tls.crt=$dir/$stem.crt" "tls.key=$dir/$stem.key" "ca.crt=$dir/ca.crt"
}

if [[ $certs == 1 ]]; then
  if [[ ! -s $dir/ca.key ]]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 3650 \
      -subj "/O=imgsearch/CN=imgsearch private CA" \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca.crt"
  fi
  ns=$namespace
  issue embedder serverAuth embedder "embedder.$ns.svc" "embedder.$ns.svc.cluster.local" \
    "embedder-headless.$ns.svc.cluster.local"
  issue search serverAuth search "search.$ns.svc" "search.$ns.svc.cluster.local"
  issue search-client clientAuth "search-client.$ns.svc"
  # The web gateway's HTTPS (the ingress controller verifies it as web.$ns.svc);
  # localhost for kubectl port-forward.
  issue web serverAuth web "web.$ns.svc" "web.$ns.svc.cluster.local" localhost IP:127.0.0.1
  issue redis serverAuth redis "redis.$ns.svc" "redis.$ns.svc.cluster.local" localhost IP:127.0.0.1
  issue milvus serverAuth milvus "milvus.$ns.svc" "milvus.$ns.svc.cluster.local"
fi

# Client tokens, one per scope; the service gets only their hashes.
principals="$dir/search-principals.txt"
echo "# NAME SCOPES sha256:TOKEN_HASH (docs/security.md)" >"$principals"
for entry in search:search write:search,write admin:admin; do
  name=${entry%%:*}
  keep_or_make "$dir/$name.token" random_token
  echo "$name ${entry#*:} sha256:$(sha256_of_file "$dir/$name.token")" >>"$principals"
done
emit imgsearch-search-principals Opaque "principals.txt=$principals"

# Redis: Search logs in as `imgsearch`; `default` may only PING (the probes).
keep_or_make "$dir/redis-password" random_hex
{
  echo "user default on nopass -@all +ping"
  echo "user imgsearch on #$(sha256_of_file "$dir/redis-password") ~* &* +@all"
} >"$dir/users.acl"
emit imgsearch-redis Opaque "password=$dir/redis-password" "users.acl=$dir/users.acl"

if [[ -n $milvus_token ]]; then
  # An external Milvus: its credentials and CA, as given.
  emit imgsearch-milvus Opaque "token=$milvus_token" "ca.crt=$milvus_ca"
else
  # Milvus: the root password (hex: safe inside user.yaml) and Search's token.
  keep_or_make "$dir/milvus-root-password" random_hex
  printf 'root:%s\n' "$(cat "$dir/milvus-root-password")" >"$dir/milvus-token"
  emit imgsearch-milvus Opaque "root-password=$dir/milvus-root-password" "token=$dir/milvus-token"
fi

echo "k8s-secrets: done; client tokens and the CA (ca.crt) are in $dir" >&2
