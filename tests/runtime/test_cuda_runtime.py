"""The GPU runtime's plain-Python parts, tested without pycuda or a GPU (fake drivers)."""
from __future__ import annotations

import gc
import shutil
import struct
import threading

import numpy as np
import pytest

from codegen import ptx
from codegen.kir import Acc, Kernel, Load, Op, Operand, Reduce, Store
from runtime import cuda, cuda_extern, cuda_user
from runtime.cuda_alloc import LARGE_QUANTUM, CachingAllocator, OutOfMemoryError, size_class
from runtime.cuda_args import pack_launch
from runtime.program import Extern, Launch, Program, View
from runtime.ptx_cache import PtxCache, decode_entry, encode_entry
from tests.custom_ptx import affine_ptx


class FakeMemory:
    """Driver memory with a capacity; addresses are 256-byte aligned like cuMemAlloc's."""

    def __init__(self, capacity: int = 1 << 40) -> None:
        self.capacity, self.used, self.next = capacity, 0, 1 << 20
        self.live: dict[int, int] = {}
        self.allocs = self.frees = 0

    def alloc(self, nbytes: int) -> int:
        if self.used + nbytes > self.capacity:
            raise MemoryError("out of memory")
        h = self.next
        self.next += -(-nbytes // 256) * 256 + 256
        self.live[h] = nbytes
        self.used += nbytes
        self.allocs += 1
        return h

    def free(self, handle: int) -> None:
        self.used -= self.live.pop(handle)
        self.frees += 1

    def address(self, handle: int) -> int:
        return handle


# --------------------------------------------------------------------------- allocator

def test_size_classes():
    assert size_class(0) == 512 and size_class(1) == 512 and size_class(512) == 512
    assert size_class(513) == 1024
    assert size_class(1 << 20) == 1 << 20                       # largest small request
    assert size_class((1 << 20) + 1) == LARGE_QUANTUM
    assert size_class(5 * (1 << 20)) == 3 * LARGE_QUANTUM


def test_freed_blocks_are_reused_without_driver_calls():
    mem = FakeMemory()
    a = CachingAllocator(mem)
    b1 = a.allocate(1000)
    a.free(b1)
    b2 = a.allocate(900)                 # same class (1024)
    assert b2 is b1 and mem.allocs == 1
    b3 = a.allocate(3000)                # another class: a new driver allocation
    assert b3 is not b1 and mem.allocs == 2
    assert b1.ptr % 256 == 0


def test_memory_stats_and_peak():
    a = CachingAllocator(FakeMemory())
    x, y = a.allocate(1024), a.allocate(3 << 20)
    s = a.memory_stats()
    assert s["allocated"] == 1024 + 2 * LARGE_QUANTUM == s["reserved"] == s["peak"]
    assert s["num_allocs"] == 2
    a.free(y)
    s = a.memory_stats()
    assert s["allocated"] == 1024 and s["reserved"] == 1024 + 2 * LARGE_QUANTUM
    assert s["peak"] == 1024 + 2 * LARGE_QUANTUM and s["cached"] == 2 * LARGE_QUANTUM
    a.allocate(3 << 20)
    assert a.memory_stats()["cache_hits"] == 1 and a.memory_stats()["num_allocs"] == 2
    a.free(x)


def test_empty_cache_returns_memory_to_the_driver():
    mem = FakeMemory()
    a = CachingAllocator(mem)
    keep = a.allocate(100)
    for n in (100, 5000, 3 << 20):
        a.free(a.allocate(n))
    a.empty_cache()
    assert mem.frees == 3 and a.memory_stats()["reserved"] == size_class(100)
    assert mem.live == {keep.handle: keep.size}


def test_out_of_memory_empties_the_cache_and_retries():
    mem = FakeMemory(capacity=4 * LARGE_QUANTUM)
    a = CachingAllocator(mem)
    a.free(a.allocate(3 * LARGE_QUANTUM))          # cached, but of the wrong size class
    big = a.allocate(4 * LARGE_QUANTUM)            # fits only once the cache is emptied
    assert big.size == 4 * LARGE_QUANTUM and mem.frees == 1
    with pytest.raises(OutOfMemoryError, match="out of memory"):
        a.allocate(LARGE_QUANTUM)


def test_device_buffers_return_to_the_pool_when_collected():
    a = CachingAllocator(FakeMemory())
    buf = cuda.DeviceBuffer(a, 4000)
    assert a.memory_stats()["allocated"] == 4096
    del buf
    gc.collect()
    assert a.memory_stats()["allocated"] == 0 and a.memory_stats()["reserved"] == 4096
    buf2 = cuda.DeviceBuffer(a, 4000)
    buf2.free()
    buf2.free()                                    # idempotent
    assert a.memory_stats()["allocated"] == 0 and a.memory_stats()["num_allocs"] == 1


# --------------------------------------------------------------------------- argument packing

def test_pack_launch_layout():
    args = pack_launch(pointers=[0x1000, 0x2000], offsets=[3, 0], itemsizes=[4, 8], shape=[5, 7],
                       strides=[[7, 1], [0, 1]])
    assert args.fmt == "PPqqqqqq"
    assert args.values == (0x100C, 0x2000, 5, 7, 7, 1, 0, 1)
    assert args.to_bytes() == struct.pack("<QQqqqqqq", *args.values)
    assert len(args.to_bytes()) == 8 * 8


def test_pack_launch_matches_the_kernel_signature():
    f = "float32"
    k = Kernel("k", 3, 1, (Operand(f, ("s", "s", "c")), Operand(f, ("b", "b", "c"))),
               (Operand(f, ("c", "c", "b")),),
               (Reduce("sum", Op("mul", (Load(0), Load(1)), f), f), Store(0, Acc(0))))
    args = pack_launch([1, 2, 3], [0, 0, 0], [4, 4, 4], [2, 3, 4], [[12, 4, 1], [0, 0, 1], [3, 1, 0]])
    assert args.fmt == ptx.param_types(k)


def test_pack_launch_rejects_mismatches():
    with pytest.raises(ValueError, match="one entry per operand"):
        pack_launch([1, 2], [0], [4, 4], [3], [[1], [1]])
    with pytest.raises(ValueError, match="2 strides for a 1-d"):
        pack_launch([1], [0], [4], [3], [[1, 1]])
    with pytest.raises(ValueError, match="negative"):
        pack_launch([1], [0], [4], [-3], [[1]])


# --------------------------------------------------------------------------- availability

def test_unavailable_reasons():
    def no_pycuda(name):
        raise ModuleNotFoundError("No module named 'pycuda'", name="pycuda")

    def no_libcuda(name):
        raise ImportError("libcuda.so.1: cannot open shared object file")

    class Drv:
        count = 0
        fail_init = False

        @classmethod
        def init(cls):
            if cls.fail_init:
                raise RuntimeError("cuInit failed: no CUDA-capable device is detected")

        class Device:
            @staticmethod
            def count():
                return Drv.count

    assert "pycuda is not installed" in cuda.probe(no_pycuda)[1]
    assert cuda.probe(no_libcuda)[1].startswith("no CUDA driver") and "libcuda" in cuda.probe(no_libcuda)[1]
    Drv.fail_init = True
    assert cuda.probe(lambda name: Drv)[1].startswith("no CUDA driver: cuInit failed")
    Drv.fail_init = False
    assert cuda.probe(lambda name: Drv)[1] == "no CUDA device: the driver reports 0 GPUs"
    Drv.count = 2
    assert cuda.probe(lambda name: Drv) == (Drv, None)


def test_module_level_queries_agree():
    assert cuda.is_available() == (cuda.unavailable_reason() is None)
    if not cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            cuda.device()


# --------------------------------------------------------------------------- program execution

class FakeDevice:
    """Records launches instead of running them (exercises slot binding and step order)."""

    def __init__(self) -> None:
        self.allocator = CachingAllocator(FakeMemory())
        self.launches: list[tuple] = []
        self.copies: list[tuple] = []

    def empty(self, nbytes):
        return cuda.DeviceBuffer(self.allocator, nbytes)

    def launch_kernel(self, kernel, shape, inputs, outputs):
        self.launches.append((kernel, shape, inputs, outputs))

    def launch_matmul(self, dtype, a, b, out):
        self.launches.append(("matmul", dtype, a, b, out))

    def copy(self, arr, out):
        self.copies.append((arr, out))

    def _program_constants(self, program):
        return {slot: self.empty(np.asarray(v).nbytes) for slot, v in program.constants.items()}


def test_program_binds_slots_aliases_and_writebacks():
    f = "float32"
    ew = Kernel("scale", 1, 0, (Operand(f, ("c",)), Operand(f, ("b",))), (Operand(f, ("c",)),),
                (Store(0, Op("mul", (Load(0), Load(1)), f)),))
    prog = Program(
        n_inputs=1, slot_nbytes=[40, 4, 40, 40], slot_dtypes=[f] * 4,
        constants={1: np.float32(2.0)},
        steps=[Launch(ew, (10,), (View(0, 0, (1,)), View(1, 0, (0,))), (View(2, 0, (1,)),)),
               Launch(ew, (10,), (View(2, 0, (1,)), View(1, 0, (0,))), (View(3, 0, (1,)),))],
        outputs=[(View(3, 0, (1,)), (10,), f)], writebacks=[(0, 0)], aliases={3: 2})
    dev = FakeDevice()
    x = dev.empty(40)
    run = cuda._ProgramRun(dev, prog, [x])
    outs = run.run()
    (k1, s1, in1, out1), (k2, s2, in2, out2) = dev.launches
    assert in1[0].buffer is x and out1[0].buffer is in2[0].buffer
    assert out2[0].buffer is out1[0].buffer          # slot 3 reuses slot 2
    assert outs[0].buffer is out2[0].buffer and outs[0].shape == (10,)
    (src, dst), = dev.copies                         # the output is written back into input 0
    assert src is outs[0] and dst.buffer is x
    with pytest.raises(ValueError, match="needs 40"):
        cuda._ProgramRun(dev, prog, [dev.empty(8)])


def _matmul_program(dtype: str) -> Program:
    return Program(n_inputs=2, slot_nbytes=[24 * 4, 20 * 4, 30 * 4], slot_dtypes=[dtype] * 3, constants={},
                   steps=[Extern("matmul", (View(0, 0, (4, 1)), View(1, 0, (5, 1))), (View(2, 0, (5, 1)),),
                                 ((6, 4), (4, 5), (6, 5)), dtype)],
                   outputs=[(View(2, 0, (5, 1)), (6, 5), dtype)])


def test_extern_integer_matmul_becomes_a_kir_reduction():
    dev = FakeDevice()
    cuda._ProgramRun(dev, _matmul_program("int32"), [dev.empty(96), dev.empty(80)]).run()
    (kernel, shape, ins, outs), = dev.launches
    assert shape == (1, 6, 5, 4) and kernel.n_reduce == 1
    assert [a.strides for a in ins + outs] == [(0, 4, 0, 1), (0, 0, 1, 5), (0, 5, 1, 0)]
    with pytest.raises(NotImplementedError, match="'conv'"):
        cuda._ProgramRun(dev, Program(0, [], [], {}, [Extern("conv", (), (), (), "float32")], []), []).run()


def test_extern_float_matmul_runs_the_tiled_kernel():
    dev = FakeDevice()
    cuda._ProgramRun(dev, _matmul_program("float32"), [dev.empty(96), dev.empty(80)]).run()
    (tag, dtype, a, b, out), = dev.launches
    assert (tag, dtype) == ("matmul", "float32")
    assert [(x.shape, x.strides) for x in (a, b, out)] == [((6, 4), (4, 1)), ((4, 5), (5, 1)),
                                                          ((6, 5), (5, 1))]


def test_tiled_matmul_launches_pack_grid_and_batch_slices(monkeypatch):
    dev = FakeDevice()
    bufs = [dev.empty(1 << 20) for _ in range(3)]
    a = cuda.DeviceArray(bufs[0], 3, (2310, 1, 70), (5, 70, 33), "float32")  # transposed batches
    w = cuda.DeviceArray(bufs[1], 0, (1, 33), (33, 130), "float32")       # 2-d: broadcast
    out = cuda.DeviceArray(bufs[2], 0, (70 * 130, 130, 1), (5, 70, 130), "float32")
    (grid, threads, args), = cuda.matmul_launches("float32", a, w, out)
    assert grid == (3, 2, 5) and threads == 256 and args.fmt == "PPP" + "q" * 12
    assert args.values[:3] == (bufs[0].ptr + 12, bufs[1].ptr, bufs[2].ptr)
    assert args.values[3:] == (70, 130, 33, 2310, 1, 70, 0, 1, 33, 70 * 130, 130, 1)
    monkeypatch.setattr(cuda, "_MAX_GRID_Z", 2)
    launches = cuda.matmul_launches("float32", a, w, out)
    assert [g for g, _, _ in launches] == [(3, 2, 2), (3, 2, 2), (3, 2, 1)]
    assert [p.values[0] - bufs[0].ptr for _, _, p in launches] == [12, 12 + 2 * 2310 * 4, 12 + 4 * 2310 * 4]
    assert [p.values[2] - bufs[2].ptr for _, _, p in launches] == [0, 2 * 70 * 130 * 4, 4 * 70 * 130 * 4]
    empty = [cuda.DeviceArray(bufs[0], 0, (0, 33, 1), (5, 0, 33), "float32"),
             cuda.DeviceArray(bufs[2], 0, (0, 130, 1), (5, 0, 130), "float32")]
    assert cuda.matmul_launches("float32", empty[0], w, empty[1]) == []
    with pytest.raises(ValueError, match="do not match"):
        cuda.matmul_launches("float32", a, out, out)


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not on PATH")
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32"])
def test_matmul_kernel_assembles(dtype):
    kernel, shape, strides = cuda_extern.matmul_launch(dtype, ((2, 8, 16), (1, 16, 4), (2, 8, 4)),
                                                       ((128, 16, 1), (64, 4, 1), (32, 4, 1)))
    assert shape == (2, 8, 4, 16) and strides[1][0] == 0
    ptx.ptxas_check(ptx.compile_kernel(kernel).ptx)
    with pytest.raises(ValueError, match="do not match"):
        cuda_extern.matmul_launch(dtype, ((8, 16), (15, 4), (8, 4)), ((16, 1), (4, 1), (4, 1)))


# --------------------------------------------------------------------------- PTX cache

def _kernel() -> Kernel:
    f = "float32"
    c = Operand(f, ("c",))
    return Kernel("neg", 1, 0, (c,), (c,), (Store(0, Op("neg", (Load(0),), f)),))


def test_ptx_cache_memory_disk_and_arch_key(tmp_path):
    k = _kernel()
    c1 = PtxCache(tmp_path, disk=True)
    p90 = c1.get(k, "sm_90")
    assert c1.get(k, "sm_90") is p90 and c1.stats["compiled"] == 1 and c1.stats["memory_hits"] == 1
    p75 = c1.get(k, "sm_75")
    assert p75.arch == "sm_75" and c1.stats["compiled"] == 2 and ".target sm_75" in p75.ptx
    c2 = PtxCache(tmp_path, disk=True)
    assert c2.get(k, "sm_90") == p90 and c2.stats == {"compiled": 0, "disk_hits": 1, "memory_hits": 0,
                                                      "disk_errors": 0}


def test_ptx_cache_ignores_damaged_entries(tmp_path):
    k = _kernel()
    PtxCache(tmp_path, disk=True).get(k)
    path = PtxCache(tmp_path).path_for(k, "sm_90")
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    c = PtxCache(tmp_path, disk=True)
    assert ".entry" in c.get(k).ptx and c.stats["disk_errors"] == 1 and c.stats["compiled"] == 1
    assert decode_entry(path.read_bytes()) == c.get(k)      # rebuilt and rewritten
    with pytest.raises(ValueError, match="magic"):
        decode_entry(b"junk" + encode_entry(c.get(k)))


# --------------------------------------------------------------------------- contexts per thread

class _FakeContext:
    """A primary context; the class keeps each thread's context stack, as the driver does."""

    stacks: dict[int, list] = {}

    def __init__(self, index: int) -> None:
        self.index = index

    def push(self) -> None:
        _FakeContext.stacks.setdefault(threading.get_ident(), []).append(self)

    @staticmethod
    def pop() -> None:
        _FakeContext.stacks[threading.get_ident()].pop()

    @staticmethod
    def get_current():
        stack = _FakeContext.stacks.get(threading.get_ident())
        return stack[-1] if stack else None


class _FakeGpu:
    def __init__(self, index: int) -> None:
        self.index = index

    def name(self) -> str:
        return f"fake GPU {self.index}"

    def compute_capability(self) -> tuple[int, int]:
        return 9, 0

    def retain_primary_context(self) -> _FakeContext:
        return _FakeContext(self.index)


class _FakeDriver:
    Device = _FakeGpu
    Context = _FakeContext


def test_each_thread_gets_the_context_of_the_gpu_it_uses(monkeypatch):
    """Driver contexts are per thread: the first use of a GPU from a thread makes its context
    current there (once), and switching GPUs replaces rather than stacks them."""
    monkeypatch.setattr(cuda, "_probe_once", lambda: (_FakeDriver, None))
    monkeypatch.setattr(cuda, "_devices", {})
    monkeypatch.setattr(cuda, "_current", threading.local())
    _FakeContext.stacks = {}
    seen = {}

    def use(name: str, indices: list[int]) -> None:
        for i in indices:
            cuda.device(i)
        seen[name] = [c.index for c in _FakeContext.stacks.get(threading.get_ident(), [])]

    use("main", [0, 0])
    workers = [threading.Thread(target=use, args=(f"t{i}", idx))
               for i, idx in enumerate([[0, 0], [0, 1, 1, 0]])]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert seen == {"main": [0], "t0": [0], "t1": [0]}


class FakeDriver:
    """pycuda's module loading and prepared calls, recorded."""

    def __init__(self) -> None:
        self.loaded: list[tuple[bytes, str]] = []
        self.calls: list[tuple] = []
        self.formats: list[str] = []

    def module_from_buffer(self, image: bytes):
        drv = self

        class Module:
            def get_function(self, entry):
                drv.loaded.append((image, entry))
                return Function()

        class Function:
            def prepare(self, fmt):
                drv.formats.append(fmt)

            def prepared_call(self, grid, block, *args, shared_size=0):
                drv.calls.append((grid, block, args))
        return Module()


def test_user_ptx_kernel_is_loaded_once_and_launched_on_dense_operands():
    dev = object.__new__(cuda.CudaDevice)          # a device on a recording driver
    dev._drv, dev._functions, dev.allocator = FakeDriver(), {}, CachingAllocator(FakeMemory())
    copies = []
    dev.copy = lambda arr, out: copies.append((arr, out))
    kernel = cuda_user.check("t_k", affine_ptx("t_k"), "t_k", None)
    src = cuda.DeviceArray(dev.empty(4 * 700), 100, (1,), (600,), "float32")       # dense from an offset
    dst = cuda.DeviceArray(dev.empty(4 * 1200), 0, (2,), (600,), "float32")        # strided: a temporary
    dev.launch_user_kernel(kernel, [src], dst)
    dev.launch_user_kernel(kernel, [src], cuda.DeviceArray(dst.buffer, 0, (1,), (0,), "float32"))
    assert dev._drv.loaded == [(kernel.ptx.encode(), "t_k")] and dev._drv.formats == ["PqPq"]
    ((grid, block, args),) = dev._drv.calls                                         # the empty one: none
    (tmp, out), = copies
    assert (grid, block) == ((3, 1, 1), (256, 1, 1)) and out is dst and tmp.strides == (1,)
    assert args == (src.buffer.ptr + 400, 600, tmp.buffer.ptr, 600)
