from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbedRequest(_message.Message):
    __slots__ = ("images", "query_views")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    QUERY_VIEWS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    query_views: bool
    def __init__(self, images: _Optional[_Iterable[bytes]] = ..., query_views: _Optional[bool] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "model", "fingerprint", "query_views")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    QUERY_VIEWS_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    model: str
    fingerprint: str
    query_views: str
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., model: _Optional[str] = ..., fingerprint: _Optional[str] = ..., query_views: _Optional[str] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("vector", "views")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    vector: _containers.RepeatedScalarFieldContainer[float]
    views: _containers.RepeatedCompositeFieldContainer[View]
    def __init__(self, vector: _Optional[_Iterable[float]] = ..., views: _Optional[_Iterable[_Union[View, _Mapping]]] = ...) -> None: ...

class View(_message.Message):
    __slots__ = ("kind", "vector", "box", "angle_degrees", "score")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    ANGLE_DEGREES_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    box: _containers.RepeatedScalarFieldContainer[float]
    angle_degrees: float
    score: float
    def __init__(self, kind: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., box: _Optional[_Iterable[float]] = ..., angle_degrees: _Optional[float] = ..., score: _Optional[float] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model", "dimension", "input_size", "device", "dtype", "max_batch_size", "max_images_per_request", "max_request_bytes", "max_image_pixels", "pooling", "fingerprint", "descriptor", "query_views")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    QUERY_VIEWS_FIELD_NUMBER: _ClassVar[int]
    model: str
    dimension: int
    input_size: int
    device: str
    dtype: str
    max_batch_size: int
    max_images_per_request: int
    max_request_bytes: int
    max_image_pixels: int
    pooling: str
    fingerprint: str
    descriptor: str
    query_views: str
    def __init__(self, model: _Optional[str] = ..., dimension: _Optional[int] = ..., input_size: _Optional[int] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., max_images_per_request: _Optional[int] = ..., max_request_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., pooling: _Optional[str] = ..., fingerprint: _Optional[str] = ..., descriptor: _Optional[str] = ..., query_views: _Optional[str] = ...) -> None: ...
