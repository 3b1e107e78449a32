"""Memory is checked before it is taken.

``available()`` is the memory this process may still take: the least of ``MemAvailable`` in
/proc/meminfo, the cgroup's limit minus its usage (v2 ``memory.max``/``memory.current``, v1
``memory.limit_in_bytes``/``memory.usage_in_bytes``) and the address-space limit (``ulimit -v``)
minus what the process already maps. ``DECAF_MAX_MEMORY`` ("2G", "512M", "1.5GiB", bytes)
replaces all of them.

Every Blob asks :func:`reserve` before it allocates. While a net is built (:func:`budget`), the
bytes of all its blobs (data and diff) and the layers' known buffers add up against one limit
taken when the build starts; the first allocation that would pass it raises
:class:`decaf.errors.OutOfMemoryError` naming the largest layers, before NumPy allocates
anything. Outside a build, a single large allocation is checked on its own (:func:`check`).
"""
import contextlib
import os
import re
import resource
import threading

import numpy as np

from .errors import DecafError, OutOfMemoryError

ENV = "DECAF_MAX_MEMORY"
# Allocations below this many bytes outside a net build are not checked (reading /proc costs).
CHECK_FROM = 16 << 20
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_local = threading.local()


def parse_size(text):
    """Bytes in "2G", "512M", "1.5GiB", "300k", "1000000" (binary units)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgtb]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise DecafError("%s=%r is not a size (examples: 2G, 512M, 1000000)" % (ENV, text))
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def human(n):
    """1536 -> "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1024.0


def _read_int(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available():
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        lim, used = _read_int(limit), _read_int(usage)
        if lim is not None and used is not None and lim < (1 << 60):
            return max(lim - used, 0)
    return None


def _address_space_available():
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    mapped = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    mapped = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return max(soft - mapped, 0)


def available():
    """(bytes this process may still take, where that figure comes from)."""
    override = os.environ.get(ENV, "").strip()
    if override:
        return parse_size(override), "%s=%s" % (ENV, override)
    found = [(v, what) for v, what in ((_meminfo_available(), "MemAvailable in /proc/meminfo"),
                                       (_cgroup_available(), "the cgroup memory limit"),
                                       (_address_space_available(), "ulimit -v"))
             if v is not None]
    return min(found) if found else (1 << 62, "no limit found")


class _Budget:
    """The bytes a net build has taken so far, by layer."""

    def __init__(self, what):
        self.what = what
        self.limit, self.source = available()
        self.total = 0
        self.by_owner = {}
        self.owner = None
        self.scratch = {}

    def add(self, nbytes, detail):
        if self.total + nbytes > self.limit:
            self.fail(nbytes, detail)
        self.total += nbytes
        self.by_owner[self.owner] = self.by_owner.get(self.owner, 0) + nbytes

    def fail(self, nbytes, detail):
        sizes = dict(self.by_owner)
        sizes[self.owner] = sizes.get(self.owner, 0) + nbytes
        top = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
        names = ", ".join("%s %s" % ("(net inputs)" if k is None else "layer %r" % k, human(v))
                          for k, v in top)
        raise OutOfMemoryError(
            "%s needs more memory than is available: at least %s (data and diff of its blobs, "
            "and the layers' buffers), %s available (%s); %s would take %s more. Largest layers: "
            "%s. Make the batch or the layers smaller, or set %s to change the limit."
            % (self.what, human(self.total + nbytes), human(self.limit), self.source, detail,
               human(nbytes), names, ENV))


@contextlib.contextmanager
def budget(what):
    """Within this block every reserve() adds up against one limit (see the module doc)."""
    outer = getattr(_local, "budget", None)
    _local.budget = b = _Budget(what)
    try:
        yield b
    finally:
        _local.budget = outer


def set_owner(name):
    """Charge what follows to layer ``name`` (in the current budget, if any)."""
    b = getattr(_local, "budget", None)
    if b is not None:
        b.owner = name


def check(nbytes, detail):
    """Raise OutOfMemoryError when one allocation of ``nbytes`` cannot fit."""
    limit, source = available()
    if nbytes > limit:
        raise OutOfMemoryError("%s would take %s, more than the %s available (%s); set %s to "
                               "change the limit" % (detail, human(nbytes), human(limit), source,
                                                     ENV))


def scratch_buffers(layer):
    """{name: bytes} of the shared scratch a (De)Convolution layer takes in forward/backward,
    {} for other layers. The convolution engines build their column buffer for a chunk of
    images at a time, about ``COL_BUFFER_ELEMENTS`` elements (one image when one image is
    larger), and move the column side (top of a Convolution, bottom of a Deconvolution) of
    the same chunk through a GEMM buffer; both live in one per-thread workspace that every
    layer shares (decaf.kernels.rowconv.scratch), so a net needs the largest of each."""
    kind = getattr(layer, "type", "")
    if kind not in ("Convolution", "Deconvolution"):
        return {}
    try:
        from .kernels.rowconv import COL_BUFFER_ELEMENTS
        kernel = int(np.prod(layer.geometry[0], dtype=np.int64))
        if kind == "Convolution":
            image, side = layer.channels, layer.num_output
            spatial = int(np.prod(layer.out_spatial, dtype=np.int64))
        else:
            image, side = layer.num_output, layer.channels
            spatial = int(np.prod(layer.in_spatial, dtype=np.int64))
        per_image = image * kernel * spatial
        chunk = max(1, min(int(layer.num), COL_BUFFER_ELEMENTS // max(per_image, 1)))
        size = layer.blobs[0].dtype.itemsize
        return {"col": chunk * per_image * size, "gemm": chunk * side * spatial * size}
    except (AttributeError, IndexError, TypeError, ValueError):
        return {}


def layer_scratch_bytes(layer):
    """Bytes of ``layer``'s shared scratch buffers (see scratch_buffers); 0 for most layers."""
    return sum(scratch_buffers(layer).values())


def reserve_scratch(layer):
    """Account for ``layer``'s scratch buffers: shared by all layers, so for each buffer the
    largest need of the net counts (charged to the layer that raises it)."""
    b = getattr(_local, "budget", None)
    if b is None:
        return
    for name, need in sorted(scratch_buffers(layer).items()):
        have = b.scratch.get(name, 0)
        if need > have:
            b.add(need - have, "its %s buffer (convolution scratch)" % (
                "column" if name == "col" else "GEMM"))
            b.scratch[name] = need


def _gpu_pool_free():
    try:
        import cupy
        pool = cupy.get_default_memory_pool()
        return int(pool.total_bytes() - pool.used_bytes())
    except Exception:  # noqa: BLE001
        return 0


def _gpu_free():
    """Free bytes on the current CUDA device, or None."""
    try:
        import cupy
        return int(cupy.cuda.runtime.memGetInfo()[0])
    except Exception:  # noqa: BLE001 (no CuPy or no device: nothing to check against)
        return None


def reserve(nbytes, detail, on_gpu=False):
    """Account for an allocation of ``nbytes`` about to happen (raises before it happens).
    Device memory is checked on its own against the device's free memory (plus CuPy's pool)."""
    if on_gpu:
        free = _gpu_free()
        if free is not None and nbytes > free + _gpu_pool_free():
            raise OutOfMemoryError("%s would take %s on the GPU, %s is free; set %s or use "
                                   "smaller layers" % (detail, human(nbytes), human(free), ENV))
        return
    b = getattr(_local, "budget", None)
    if b is not None:
        b.add(nbytes, detail)
    elif nbytes >= CHECK_FROM:
        check(nbytes, detail)
