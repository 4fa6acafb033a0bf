"""One-line errors: a mistake in the input or the settings is said in one line on stderr, never a traceback."""
import signal
import sys


class UserError(Exception):
    """A mistake in the input or settings: printed as one line, exit code 1."""


def run(main):
    """Run a script's main: a UserError ends it with a one-line message and exit code 1, no traceback."""
    if hasattr(sys.stdout, 'reconfigure'):  # a console that cannot show a character (Windows' cp1252) shows '?'
        sys.stdout.reconfigure(errors='replace')
    if hasattr(signal, 'SIGBREAK'):  # Windows: Ctrl-Break stops a run as Ctrl-C does (saving first while training)
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C outside training: stop quietly
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError too
        if not isinstance(e, MemoryError) and 'memory' not in str(e):
            raise
        print("error: out of memory: use a smaller --batch_size, --block_size, --n_embd or --n_layer", file=sys.stderr)
        sys.exit(1)
