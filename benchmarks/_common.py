"""What the benchmark scripts share: the backend switch, and where torch's side of a comparison runs."""
from mrcnn_edu import backend


def choose_backend(name, torch):
    """Switch the library to ``name`` (None keeps ``MRCNN_EDU_BACKEND``'s choice) and return the device for
    torch: ``"cuda"`` when ours runs on CuPy and torch sees a GPU, with TF32 off so that both sides do float32
    arithmetic (CuPy's products are plain float32), else ``"cpu"``. Host memory is kept for reuse as
    ``mrcnn-edu train`` keeps it (``backend.keep_freed_memory``), for both sides of a comparison."""
    backend.keep_freed_memory()
    if name:
        backend.use(name)
    if backend.name == "cupy" and torch is not None and torch.cuda.is_available():
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        return "cuda"
    return "cpu"


def synchronize(torch, device):
    """Wait for the work queued on the GPU, ours (CuPy) and torch's, before a timer reads the clock."""
    backend.synchronize()
    if device == "cuda":
        torch.cuda.synchronize()
