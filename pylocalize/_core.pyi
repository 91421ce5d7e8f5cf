"""
pylocalize C++ core (see the pylocalize package for the documented API)
"""

from __future__ import annotations

import collections.abc
import typing

import numpy
import numpy.typing

__all__: list[str] = [
    "BinaryIndex",
    "CannIndex",
    "CannKernel",
    "CannPqIndex",
    "FormatError",
    "GpuBinaryCodes",
    "GpuCannExact",
    "GpuCannIvf",
    "GpuFloatRows",
    "GpuSdcCodes",
    "InvertedFile",
    "MultiBitIndex",
    "ProductQuantizer",
    "Shading",
    "align_patches",
    "assign",
    "binarize",
    "cuda_built",
    "cuda_device_count",
    "detected_simd_level",
    "get_num_threads",
    "has_cuda",
    "has_openmp",
    "kmeans",
    "num_cores",
    "read_container",
    "render_batch",
    "set_num_threads",
    "set_simd_level",
    "simd_level",
    "supported_simd_levels",
    "write_container",
]

class FormatError(ValueError):
    pass

class BinaryIndex:
    @staticmethod
    def deserialize(arg0: typing.Any) -> BinaryIndex: ...
    @staticmethod
    def load(path: str, mmap: bool = False) -> BinaryIndex: ...
    def __init__(self, nbits: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def add(self, codes: typing.Any, ids: typing.Any = None) -> None: ...
    def codes(self) -> numpy.typing.NDArray[numpy.uint8]: ...
    def ids(self) -> numpy.typing.NDArray[numpy.int64]: ...
    def range_search(self, queries: typing.Any, radius: typing.SupportsInt | typing.SupportsIndex) -> tuple: ...
    def remove_ids(self, ids: typing.Any) -> int: ...
    def reset(self) -> None: ...
    def save(self, path: str) -> None: ...
    def search(
        self, queries: typing.Any, k: typing.SupportsInt | typing.SupportsIndex
    ) -> tuple[numpy.typing.NDArray[numpy.int32], numpy.typing.NDArray[numpy.int64]]: ...
    def serialize(self) -> numpy.typing.NDArray[numpy.uint8]: ...
    @property
    def code_size(self) -> int: ...
    @property
    def nbits(self) -> int: ...
    @property
    def ntotal(self) -> int: ...

class MultiBitIndex:
    @staticmethod
    def deserialize(arg0: typing.Any) -> MultiBitIndex: ...
    @staticmethod
    def load(path: str, mmap: bool = False) -> MultiBitIndex: ...
    def __init__(
        self, dim: typing.SupportsInt | typing.SupportsIndex, bits_per_dim: typing.SupportsInt | typing.SupportsIndex
    ) -> None: ...
    def add(self, codes: typing.Any, ids: typing.Any = None, vectors: typing.Any = None) -> None: ...
    def ids(self) -> numpy.typing.NDArray[numpy.int64]: ...
    def remove_ids(self, ids: typing.Any) -> int: ...
    def reset(self) -> None: ...
    def save(self, path: str) -> None: ...
    def search(
        self,
        query_codes: typing.Any,
        k: typing.SupportsInt | typing.SupportsIndex,
        query_vectors: typing.Any = None,
        rerank: typing.SupportsInt | typing.SupportsIndex = 0,
        candidates: typing.SupportsInt | typing.SupportsIndex = 0,
    ) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]: ...
    def serialize(self) -> numpy.typing.NDArray[numpy.uint8]: ...
    @property
    def bits_per_dim(self) -> int: ...
    @property
    def code_size(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def has_vectors(self) -> bool: ...
    @property
    def ntotal(self) -> int: ...

class ProductQuantizer:
    def __init__(
        self, dim: typing.SupportsInt | typing.SupportsIndex, m: typing.SupportsInt | typing.SupportsIndex
    ) -> None: ...
    def decode(self, codes: typing.Any) -> numpy.typing.NDArray[numpy.float32]: ...
    def distance_tables(self, x: typing.Any) -> numpy.typing.NDArray[numpy.float32]: ...
    def encode(self, x: typing.Any) -> numpy.typing.NDArray[numpy.uint8]: ...
    def train(
        self,
        x: typing.Any,
        iterations: typing.SupportsInt | typing.SupportsIndex,
        seed: typing.SupportsInt | typing.SupportsIndex,
        max_points_per_centroid: typing.SupportsInt | typing.SupportsIndex,
    ) -> None: ...
    @property
    def codebooks(self) -> numpy.typing.NDArray[numpy.float32]: ...
    @property
    def dim(self) -> int: ...
    @property
    def is_trained(self) -> bool: ...
    @property
    def m(self) -> int: ...

class Shading:
    """
    Members:

      LAMBERT

      UNLIT
    """

    LAMBERT: typing.ClassVar[Shading]
    UNLIT: typing.ClassVar[Shading]
    __members__: typing.ClassVar[dict[str, Shading]]
    @typing.overload
    def __eq__(self, other: Shading) -> bool: ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool: ...
    def __getstate__(self) -> int: ...
    def __hash__(self) -> int: ...
    def __index__(self) -> int: ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __int__(self) -> int: ...
    @typing.overload
    def __ne__(self, other: Shading) -> bool: ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool: ...
    def __repr__(self) -> str: ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def __str__(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

class CannKernel:
    def __call__(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> float: ...
    def __init__(
        self,
        kind: str = "cann",
        p0: typing.SupportsFloat | typing.SupportsIndex = 120.0,
        p1: typing.SupportsFloat | typing.SupportsIndex = 0.4592,
        sigma: typing.SupportsFloat | typing.SupportsIndex = 60.0,
    ) -> None: ...
    @property
    def cutoff(self) -> float: ...
    @property
    def kind(self) -> str: ...
    @property
    def p0(self) -> float: ...
    @property
    def p1(self) -> float: ...
    @property
    def sigma(self) -> float: ...

class CannIndex:
    @staticmethod
    def deserialize(arg0: typing.Any) -> CannIndex: ...
    @staticmethod
    def load(path: str) -> CannIndex: ...
    def __init__(self, dim: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def add(self, descriptors: typing.Any, image_ids: typing.Any) -> None: ...
    def image_feature_counts(self) -> numpy.typing.NDArray[numpy.int64]: ...
    def image_ids(self) -> numpy.typing.NDArray[numpy.int64]: ...
    def remove_images(self, image_ids: typing.Any) -> int: ...
    def reset(self) -> None: ...
    def save(self, path: str) -> None: ...
    def search(
        self,
        queries: typing.Any,
        k: typing.SupportsInt | typing.SupportsIndex,
        kernel: CannKernel,
        method: str,
        nprobe: typing.SupportsInt | typing.SupportsIndex,
    ) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]: ...
    def search_batch(
        self,
        query_sets: list,
        k: typing.SupportsInt | typing.SupportsIndex,
        kernel: CannKernel,
        method: str,
        nprobe: typing.SupportsInt | typing.SupportsIndex,
    ) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]: ...
    def serialize(self) -> numpy.typing.NDArray[numpy.uint8]: ...
    def set_grid_params(
        self,
        num_grids: typing.SupportsInt | typing.SupportsIndex,
        num_radii: typing.SupportsInt | typing.SupportsIndex,
        dims: typing.SupportsInt | typing.SupportsIndex,
        cell_factor: typing.SupportsFloat | typing.SupportsIndex,
        max_bin: typing.SupportsInt | typing.SupportsIndex,
        seed: typing.SupportsInt | typing.SupportsIndex,
        r_max: typing.SupportsFloat | typing.SupportsIndex,
    ) -> None: ...
    def set_search_options(
        self,
        method: str,
        nprobe: typing.SupportsInt | typing.SupportsIndex,
        kernel: CannKernel,
        num_grids: typing.SupportsInt | typing.SupportsIndex,
        num_radii: typing.SupportsInt | typing.SupportsIndex,
        dims: typing.SupportsInt | typing.SupportsIndex,
        cell_factor: typing.SupportsFloat | typing.SupportsIndex,
        max_bin: typing.SupportsInt | typing.SupportsIndex,
        seed: typing.SupportsInt | typing.SupportsIndex,
    ) -> None: ...
    def train(
        self,
        nlist: typing.SupportsInt | typing.SupportsIndex,
        iterations: typing.SupportsInt | typing.SupportsIndex = 8,
        seed: typing.SupportsInt | typing.SupportsIndex = 0,
        max_points_per_list: typing.SupportsInt | typing.SupportsIndex = 64,
    ) -> None: ...
    @property
    def dim(self) -> int: ...
    @property
    def dtype(self) -> typing.Any: ...
    @property
    def grid_memory_bytes(self) -> int: ...
    @property
    def is_trained(self) -> bool: ...
    @property
    def memory_bytes(self) -> int: ...
    @property
    def nlist(self) -> int: ...
    @property
    def ntotal(self) -> int: ...
    @property
    def num_images(self) -> int: ...
    @property
    def search_options(self) -> typing.Any: ...

class CannPqIndex:
    @staticmethod
    def deserialize(arg0: typing.Any) -> CannPqIndex: ...
    @staticmethod
    def load(path: str, mmap: bool) -> CannPqIndex: ...
    def __init__(
        self,
        dim: typing.SupportsInt | typing.SupportsIndex,
        m: typing.SupportsInt | typing.SupportsIndex,
        by_residual: bool,
    ) -> None: ...
    def add(self, descriptors: typing.Any, image_ids: typing.Any) -> None: ...
    def reconstruct(self) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]: ...
    def save(self, path: str) -> None: ...
    def search(
        self,
        queries: typing.Any,
        k: typing.SupportsInt | typing.SupportsIndex,
        kernel: CannKernel,
        nprobe: typing.SupportsInt | typing.SupportsIndex,
    ) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]: ...
    def serialize(self) -> numpy.typing.NDArray[numpy.uint8]: ...
    def set_search_options(self, nprobe: typing.SupportsInt | typing.SupportsIndex, kernel: CannKernel) -> None: ...
    def train(
        self,
        x: typing.Any,
        nlist: typing.SupportsInt | typing.SupportsIndex,
        iterations: typing.SupportsInt | typing.SupportsIndex,
        seed: typing.SupportsInt | typing.SupportsIndex,
        max_points_per_list: typing.SupportsInt | typing.SupportsIndex,
        pq_iterations: typing.SupportsInt | typing.SupportsIndex,
        pq_max_points_per_centroid: typing.SupportsInt | typing.SupportsIndex,
        max_pq_training_rows: typing.SupportsInt | typing.SupportsIndex,
    ) -> None: ...
    @property
    def by_residual(self) -> bool: ...
    @property
    def centroids(self) -> numpy.typing.NDArray[numpy.float32]: ...
    @property
    def codebooks(self) -> numpy.typing.NDArray[numpy.float32]: ...
    @property
    def dim(self) -> int: ...
    @property
    def is_trained(self) -> bool: ...
    @property
    def m(self) -> int: ...
    @property
    def memory_bytes(self) -> int: ...
    @property
    def nlist(self) -> int: ...
    @property
    def ntotal(self) -> int: ...
    @property
    def num_images(self) -> int: ...
    @property
    def search_options(self) -> typing.Any: ...

class CoarseQuantizer:
    def __init__(
        self,
        centroids: typing.Any,
        seed: typing.SupportsInt | typing.SupportsIndex = 0,
        group_probe: typing.SupportsInt | typing.SupportsIndex = 8,
    ) -> None: ...
    def assign(
        self, x: typing.Any, m: typing.SupportsInt | typing.SupportsIndex = 1
    ) -> tuple[numpy.typing.NDArray[numpy.int64], numpy.typing.NDArray[numpy.float32]]: ...
    @property
    def size(self) -> int: ...
    @property
    def two_level(self) -> bool: ...

class InvertedFile:
    def __init__(self, num_words: typing.SupportsInt | typing.SupportsIndex) -> None: ...
    def add(
        self, words: typing.Any, weights: typing.Any, doc_id: typing.SupportsInt | typing.SupportsIndex
    ) -> None: ...
    def search(
        self, words: typing.Any, weights: typing.Any, k: typing.SupportsInt | typing.SupportsIndex
    ) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]:
        """
        The k best documents by dot product: (scores float32 (k,), doc ids int64 (k,)), best first.
        """
    @property
    def num_documents(self) -> int: ...
    @property
    def num_entries(self) -> int: ...
    @property
    def num_words(self) -> int: ...

# The device copies below exist only in a build with -DPYLOCALIZE_CUDA=ON (cpp/bindings/cuda.cc),
# so pybind11-stubgen run on the default build does not write them: keep them by hand.
class GpuBinaryCodes:
    def __init__(self, index: BinaryIndex, device: typing.SupportsInt = 0) -> None: ...
    @property
    def ntotal(self) -> int: ...
    def search(
        self, queries: typing.Any, k: typing.SupportsInt, code_size: typing.SupportsInt
    ) -> tuple[numpy.typing.NDArray[numpy.int32], numpy.typing.NDArray[numpy.int64]]: ...
    def range_search(
        self, queries: typing.Any, radius: typing.SupportsInt, code_size: typing.SupportsInt
    ) -> tuple[
        numpy.typing.NDArray[numpy.int64], numpy.typing.NDArray[numpy.int32], numpy.typing.NDArray[numpy.int64]
    ]: ...

class GpuSdcCodes:
    def __init__(self, index: MultiBitIndex, device: typing.SupportsInt = 0) -> None: ...
    def search(
        self,
        index: MultiBitIndex,
        query_codes: typing.Any,
        k: typing.SupportsInt,
        query_vectors: typing.Any = None,
        rerank: typing.SupportsInt = 0,
        candidates: typing.SupportsInt = 0,
    ) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]: ...

class GpuCannIvf:
    def __init__(self, index: CannIndex, device: typing.SupportsInt = 0) -> None: ...
    def is_current(self, index: CannIndex) -> bool: ...
    def search(
        self,
        queries: typing.Any,
        k: typing.SupportsInt,
        kernel: CannKernel,
        nprobe: typing.SupportsInt,
        dim: typing.SupportsInt,
    ) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]: ...

class GpuFloatRows:
    def __init__(self, rows: typing.Any, device: typing.SupportsInt = 0) -> None: ...
    def search(
        self, x: typing.Any, k: typing.SupportsInt, metric: str, dim: typing.SupportsInt
    ) -> tuple[numpy.typing.NDArray[numpy.int64], numpy.typing.NDArray[numpy.float32]]: ...

class GpuCannExact:
    def __init__(self, index: CannIndex, device: typing.SupportsInt = 0) -> None: ...
    def is_current(self, index: CannIndex) -> bool: ...
    def search(
        self, queries: typing.Any, k: typing.SupportsInt, kernel: CannKernel, dim: typing.SupportsInt
    ) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64]]: ...

def align_patches(
    image: typing.Any,
    references: typing.Any,
    affines: typing.Any,
    start_xy: typing.Any,
    template_size: typing.SupportsInt | typing.SupportsIndex = 8,
    max_iterations: typing.SupportsInt | typing.SupportsIndex = 10,
    max_step_px: typing.SupportsFloat | typing.SupportsIndex = 1.0,
    converged_px: typing.SupportsFloat | typing.SupportsIndex = 0.01,
    max_shift_px: typing.SupportsFloat | typing.SupportsIndex = 4.0,
    min_stddev: typing.SupportsFloat | typing.SupportsIndex = 1.0,
) -> tuple:
    """
    Sub-pixel alignment of reference patches, warped into the frame, near predicted centres;
    see pylocalize.localization.patches.align_patches for the documented API.
    """

def assign(
    x: typing.Any, centroids: typing.Any, m: typing.SupportsInt | typing.SupportsIndex = 1
) -> tuple[numpy.typing.NDArray[numpy.int64], numpy.typing.NDArray[numpy.float32]]: ...
def binarize(
    x: typing.Any, bits_per_dim: typing.SupportsInt | typing.SupportsIndex
) -> numpy.typing.NDArray[numpy.uint8]: ...
def detected_simd_level() -> str:
    """
    Best SIMD level this CPU supports.
    """

def get_num_threads() -> int: ...
def cuda_built() -> bool:
    """
    Whether this build has the CUDA kernels (-DPYLOCALIZE_CUDA=ON).
    """

def cuda_device_count() -> int:
    """
    CUDA devices usable now (0 without the CUDA build, a driver or a device).
    """

def has_cuda() -> bool:
    """
    Whether the CUDA kernels are built and a CUDA device is usable.
    """
def has_openmp() -> bool: ...
def kmeans(
    x: typing.Any,
    k: typing.SupportsInt | typing.SupportsIndex,
    iterations: typing.SupportsInt | typing.SupportsIndex,
    seed: typing.SupportsInt | typing.SupportsIndex,
    max_points_per_centroid: typing.SupportsInt | typing.SupportsIndex,
) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int64], float]: ...
def num_cores() -> int: ...
def read_container(source: typing.Any, mmap: bool = False, verify: bool = True) -> tuple:
    """
    Reads a container from a path or a uint8 array: (tag, (major, minor), meta, sections).
    """

def remove_stale_temp_files(path: typing.Any) -> int:
    """
    Removes temporary files left next to path by killed writers; returns how many.
    """

def render_batch(
    vertices: typing.Any,
    faces: typing.Any,
    poses: typing.Any,
    K: typing.Any,
    width: typing.SupportsInt | typing.SupportsIndex,
    height: typing.SupportsInt | typing.SupportsIndex,
    near: typing.SupportsFloat | typing.SupportsIndex,
    far: typing.SupportsFloat | typing.SupportsIndex,
    vertex_normals: typing.Any,
    colors: typing.Any,
    uvs: typing.Any,
    texture: typing.Any,
    shading: Shading,
    ambient: typing.SupportsFloat | typing.SupportsIndex,
    supersample: typing.SupportsInt | typing.SupportsIndex,
    cull_back: bool,
    background: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex],
    outputs: collections.abc.Sequence[str],
) -> dict:
    """
    Renders a batch of views; see pylocalize.render.Renderer for the documented API.
    """

def set_num_threads(n: typing.SupportsInt | typing.SupportsIndex) -> None: ...
def set_simd_level(level: str) -> None: ...
def simd_level() -> str:
    """
    SIMD level the kernels use now.
    """

def supported_simd_levels() -> list[str]: ...
def write_container(path: typing.Any, tag: str, meta: dict, sections: dict) -> typing.Any:
    """
    Writes a pylocalize container to path (atomically), or returns its bytes if path is None.
    """

def write_file_atomic(path: typing.Any, data: typing.Any) -> None:
    """
    Writes bytes to path all-or-nothing (temporary file, fsync, rename, fsync of the folder).
    """

__version__: str = "0.1.0"
