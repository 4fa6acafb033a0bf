"""Shared test helpers: tiny Shakespeare found (or downloaded once), subprocess runs, the one-line error check."""
import atexit
import contextlib
import hashlib
import io
import http.server
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / 'exercises')]  # gpt.py and extras; the exercises, as scripts see them
import extras  # noqa: E402

SHARED = ROOT.parent / 'shared' / 'data' / 'tinyshakespeare.txt'  # this project's CI has it; a fresh clone does not
DOWNLOADED = ROOT / 'tests' / '.data' / 'tinyshakespeare.txt'     # where the tests download it, once (git-ignored)
# the tests read a copy, so that gpt.py's cache of it (tinyshakespeare.txt.cache) is written beside the copy
DATA = pathlib.Path(tempfile.mkdtemp(prefix='gpt-tests-')) / 'tinyshakespeare.txt'
atexit.register(shutil.rmtree, DATA.parent, ignore_errors=True)

# the CPU's values of gpt.py's two-valued settings (`name = A if gpu else B`: B)
CPU = {name: pair[1] for name, (_, pair) in extras.config.script_settings(ROOT / 'gpt.py').items() if pair}

# a GPT small enough that a whole run (training, samples, more.txt) takes seconds on a CPU
TINY = ['--device=cpu', '--n_layer=1', '--n_embd=32', '--n_head=2', '--block_size=16', '--batch_size=8',
        '--max_iters=20', '--eval_interval=10', '--eval_iters=2', '--compile=False', '--max_new_tokens=50',
        '--more_chars=300']


def is_tiny_shakespeare(path):
    path = pathlib.Path(path)
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == extras.corpus.DATA_SHA256


def find_tiny_shakespeare(shared=SHARED, local=ROOT / 'input.txt', downloaded=DOWNLOADED):
    """(path, how): ../shared's copy, else input.txt if it is tiny Shakespeare, else an earlier download, else a new
    download with gpt.py's own code (its SHA-256 checked). Offline with none of them: a UserError saying what to do."""
    for path, how in ((shared, None), (local, None), (downloaded, None)):
        if is_tiny_shakespeare(path):
            return pathlib.Path(path), how
    downloaded.parent.mkdir(parents=True, exist_ok=True)
    try:
        extras.corpus.download(str(downloaded))
    except extras.errors.UserError:
        raise extras.errors.UserError(f"the tests need tiny Shakespeare and could not download it: save "
                                      f"{extras.corpus.DATA_URL} as {local} (or run `python gpt.py` once online), "
                                      "then run the tests again") from None
    return pathlib.Path(downloaded), f"tiny Shakespeare was downloaded to {downloaded} (once; the tests reuse it)"


@pytest.fixture(scope='session')
def data_path(request):
    """A copy of tiny Shakespeare; every test that needs it fails with the same one line if it cannot be had."""
    if not DATA.exists():
        problem = None
        try:
            capture = request.config.pluginmanager.getplugin('capturemanager')
            with capture.global_and_fixture_disabled():  # extras.corpus.download's line, and ours, reach the terminal
                path, how = find_tiny_shakespeare()
                if how:
                    print(f"\n{how}")
        except extras.errors.UserError as e:
            problem = str(e)
        if problem:  # outside the except block: the report is that one line, not a chain of exceptions
            pytest.fail(problem, pytrace=False)
        shutil.copy(path, DATA)
    return DATA


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory, data_path):
    """One tiny training run of gpt.py, shared by the tests that read what it wrote: (its folder, the result)."""
    cwd = tmp_path_factory.mktemp('run')
    result = run_script('gpt.py', *TINY, f'--input_file={data_path}', cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd, result


@pytest.fixture(scope='session')
def text(data_path):
    return data_path.read_text(encoding='utf-8')


BODY = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 200


@pytest.fixture
def server():
    """Serve BODY at /input.txt from a thread on 127.0.0.1 (never the internet); yields the URL."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != '/input.txt':
                self.send_error(404)
                return
            body = BODY.encode()
            self.send_response(200)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_port}/input.txt'
    httpd.shutdown()
    httpd.server_close()


def run_script(script, *args, cwd, env=None, timeout=300):
    """Run python SCRIPT ARGS in cwd and return the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, encoding='utf-8')


def start_script(script, *args, cwd):
    """Start python SCRIPT ARGS in cwd, so that interrupt(proc) reaches it as Ctrl-C would; text pipes."""
    if os.name == 'nt':  # Windows: Ctrl-C is a console event, sent to a process group
        kw = dict(creationflags=subprocess.CREATE_NEW_PROCESS_GROUP)
    else:  # a background job may start with SIGINT ignored, and Python keeps that: give the child the default
        kw = dict(preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding='utf-8', **kw)


def interrupt(proc):
    proc.send_signal(signal.CTRL_BREAK_EVENT if os.name == 'nt' else signal.SIGINT)


def call(main, *args):
    """main(args) in this process, as extras.errors.run runs a script (one-line errors, exit codes): a CompletedProcess
    with its exit code, stdout and stderr, like run_script's, without a new Python and torch to start."""
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            extras.errors.run(lambda: main(list(map(str, args))))
        except SystemExit as e:
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def assert_user_error(result, code, *words):
    """A failed run: the given exit code, and on stderr exactly one line, which names words; no traceback."""
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
