"""IPython magics: ``%px``, ``%%px``, ``%pxresult``, ``%autopx`` (``%load_ext ferrocluster``)."""

_state = {"view": None, "last": None, "autopx": False, "shell": None}


def register(view, suffix=""):
    """Makes ``view`` the magics' view (``Client.activate`` calls this)."""
    _state["view"] = view
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        _register_magics(shell, suffix)


def _view():
    view = _state["view"]
    if view is None:
        from ._client import Client
        view = Client().direct_view("all")
        _state["view"] = view
    return view


def _run(code, block=True):
    view = _view()
    ar = view.execute(code, block=False)
    _state["last"] = ar
    if block:
        try:
            ar.wait()
        finally:
            ar.display_outputs()
        ar.get()
    return ar


def _register_magics(shell, suffix=""):
    from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class

    @magics_class
    class ParallelMagics(Magics):
        @line_cell_magic
        def px(self, line="", cell=None):
            """Runs code on every engine of the current view, showing each engine's output
            as ``[stdout:N] …``; ``%%px --noblock`` returns at once (see ``%pxresult``)."""
            if cell is None:
                return _run(line) and None
            block = "--noblock" not in line.split()
            ar = _run(cell, block)
            return None if block else ar

        @line_magic
        def pxresult(self, line=""):
            """Shows the output of the last ``%px`` (waiting for it)."""
            ar = _state["last"]
            if ar is None:
                print("no %px result yet")
                return
            ar.wait()
            ar.display_outputs()
            ar.get()

        @line_magic
        def autopx(self, line=""):
            """Toggles running every cell on the engines."""
            if _state["autopx"]:
                _disable_autopx(self.shell)
                print("%autopx disabled")
            else:
                _enable_autopx(self.shell)
                print("%autopx enabled")

    shell.register_magics(ParallelMagics)
    _state["shell"] = shell


def _enable_autopx(shell):
    original = shell.run_cell

    def run_cell(raw_cell, *args, **kwargs):
        if raw_cell.strip().startswith("%autopx"):
            return original(raw_cell, *args, **kwargs)
        try:
            _run(raw_cell)
        except Exception as e:
            print(e)
        return original("pass", *args, **kwargs)

    _state["autopx"] = original
    shell.run_cell = run_cell


def _disable_autopx(shell):
    original = _state["autopx"]
    if original:
        shell.run_cell = original
    _state["autopx"] = False


def load_ipython_extension(ip):
    _register_magics(ip)


def unload_ipython_extension(ip):
    _disable_autopx(ip)
