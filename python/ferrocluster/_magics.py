"""IPython magics (``%load_ext ferrocluster``, or ``rc.activate()``), as IPyparallel's:

* ``%px CODE`` and ``%%px`` run code on every engine of the current view and show what
  each engine printed as ``[stdout:0] …``; options ``--targets 0,2`` (also ``1:3``, ``::2``,
  ``all``), ``--block`` / ``--noblock`` (then ``%pxresult`` shows the output), ``--local``
  (``%%px`` only: run the cell here too).
* ``%pxresult`` waits for the last ``%px`` and shows its output.
* ``%autopx`` toggles running every cell on the engines.
* ``%pxconfig --targets … --block/--noblock`` sets the defaults of the magics.

A failing engine's remote traceback is shown as ``[engine 0] Traceback …``.
"""

import re

_state = {
    "view": None,  # the DirectView the magics use
    "last": None,  # the last %px AsyncResult
    "autopx": None,  # the shell's own run_cell while %autopx is on
    "block": True,
    "targets": None,  # None: the view's targets
}


def register(view, suffix=""):
    """Makes ``view`` the magics' view and registers the magics (``Client.activate``)."""
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


def _parse_targets(text):
    """``all``, ``3``, ``0,2,5``, ``1:3`` or ``::2`` (slices of the registered ids)."""
    text = text.strip()
    if text in ("all", "*", ""):
        return "all"
    if ":" in text:
        ids = _view().client.ids
        parts = [int(p) if p.strip() else None for p in text.split(":")]
        return ids[slice(*parts)]
    ids = [int(t) for t in text.replace(",", " ").split()]
    return ids[0] if len(ids) == 1 else ids


_OPTION = re.compile(r"(--block|--noblock|--local|(?:--targets|-t)(?:=|\s+)(\S+))(?:\s+|$)")


def _options(line, allow_local=False):
    """(options, the code after them): options lead the line."""
    opts = {"block": _state["block"], "targets": _state["targets"], "local": False}
    rest = line.lstrip()
    while True:
        m = _OPTION.match(rest)
        if m is None:
            break
        word = m.group(1)
        if word == "--block":
            opts["block"] = True
        elif word == "--noblock":
            opts["block"] = False
        elif word == "--local":
            if not allow_local:
                break
            opts["local"] = True
        else:
            opts["targets"] = _parse_targets(m.group(2))
        rest = rest[m.end():]
    return opts, rest


def _show(ar):
    """Each engine's output; then raises what failed (IPython shows the remote tracebacks,
    ``[engine 0] …``)."""
    ar.display_outputs()
    ar.get()


def _run(code, block=True, targets=None):
    view = _view()
    ar = view.execute(code, block=False, targets=targets)
    _state["last"] = ar
    if block:
        try:
            ar.wait()
        except KeyboardInterrupt:
            ar.cancel()
            raise
        _show(ar)
        return None
    return ar


def _register_magics(shell, suffix=""):
    def px(line="", cell=None):
        """Runs code on every engine of the current view, showing each engine's output as
        ``[stdout:N] …``: ``%px CODE`` or ``%%px`` (options ``--targets``, ``--block``,
        ``--noblock``, ``--local``)."""
        opts, rest = _options(line, allow_local=cell is not None)
        code = rest if cell is None else cell
        if cell is not None and opts["local"]:
            shell.run_cell(cell)
        if not code.strip():
            return None
        return _run(code, opts["block"], opts["targets"])

    def pxresult(line=""):
        """Shows the output of the last ``%px`` (waiting for it)."""
        ar = _state["last"]
        if ar is None:
            print("no %px result yet")
            return
        ar.wait()
        _show(ar)

    def autopx(line=""):
        """Toggles running every cell on the engines (``%autopx`` again to stop)."""
        if _state["autopx"] is not None:
            _disable_autopx(shell)
            print("%autopx disabled")
        else:
            _enable_autopx(shell, suffix)
            print("%autopx enabled")

    def pxconfig(line=""):
        """Sets the magics' defaults: ``--targets …``, ``--block`` / ``--noblock``."""
        opts, rest = _options(line)
        if rest.strip():
            print("%%pxconfig takes --targets, --block and --noblock, not %r" % rest)
            return
        _state["block"] = opts["block"]
        _state["targets"] = opts["targets"]

    shell.register_magic_function(px, "line_cell", "px" + suffix)
    shell.register_magic_function(pxresult, "line", "pxresult" + suffix)
    shell.register_magic_function(autopx, "line", "autopx" + suffix)
    shell.register_magic_function(pxconfig, "line", "pxconfig" + suffix)


def _enable_autopx(shell, suffix=""):
    original = shell.run_cell
    toggle = "%autopx" + suffix

    def run_cell(raw_cell, *args, **kwargs):
        if raw_cell.strip().startswith(toggle):
            return original(raw_cell, *args, **kwargs)
        try:
            _run(raw_cell, _state["block"], _state["targets"])
        except Exception as e:
            print(e)
        return original("pass", *args, **kwargs)

    _state["autopx"] = original
    shell.run_cell = run_cell


def _disable_autopx(shell):
    original = _state["autopx"]
    if original is not None:
        shell.run_cell = original
    _state["autopx"] = None


def load_ipython_extension(ip):
    _register_magics(ip)


def unload_ipython_extension(ip):
    _disable_autopx(ip)
