"""Files written whole or not at all: through a temporary file and a rename, Ctrl-C held meanwhile."""
import contextlib
import os
import signal
import tempfile


def save_atomic(path, write):
    """Write a file through a temporary file and a rename, so it is never left half-written; Ctrl-C waits for it."""
    with ctrl_c_held():
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix='.tmp-')
        try:
            with os.fdopen(fd, 'wb') as f:
                write(f)
            os.replace(tmp, path)
        except BaseException:
            os.remove(tmp)
            raise


@contextlib.contextmanager
def ctrl_c_held():
    """Hold Ctrl-C (and Windows' Ctrl-Break) until the block ends, then act on it. A KeyboardInterrupt inside
    torch.save turns into a RuntimeError ("unexpected pos") or even a C++ abort: Ctrl-C just after an evaluation
    line, while the checkpoints were written, ended a run with a traceback instead of its message."""
    names = [name for name in ('SIGINT', 'SIGBREAK') if hasattr(signal, name)]
    held = []
    try:
        old = {name: signal.signal(getattr(signal, name), lambda *a: held.append(a)) for name in names}
    except ValueError:  # not the main thread: signals go to the main thread anyway
        yield
        return
    try:
        yield
    finally:
        for name, handler in old.items():
            signal.signal(getattr(signal, name), handler)
    if held and callable(old['SIGINT']):
        old['SIGINT'](*held[0])  # Python's own handler raises KeyboardInterrupt here, after the block
