"""%px and friends, driven through IPython's InteractiveShell."""

import pytest

IPython = pytest.importorskip("IPython")


def test_px_runs_on_every_engine_and_shows_output_per_engine(rc, capsys):
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "ferrocluster")
    rc.activate()
    shell.run_cell("%px x = 6 * 7")
    assert rc[:]["x"] == [42, 42]
    capsys.readouterr()
    shell.run_cell("%%px\nprint('x is', x)\n")
    out = capsys.readouterr().out
    for e in rc.ids:
        assert "[stdout:%d] x is 42" % e in out, out
    shell.run_cell("%%px --noblock\nprint('later')\n")
    shell.run_line_magic("pxresult", "")
    assert "later" in capsys.readouterr().out
    shell.run_line_magic("autopx", "")
    shell.run_cell("y = x + 1")
    shell.run_line_magic("autopx", "")
    assert rc[:]["y"] == [43, 43]
