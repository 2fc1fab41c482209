"""ferrocluster: an IPyparallel-style compute cluster with a Rust core.

    import ferrocluster as fc

    with fc.Cluster(n=4) as rc:                       # controller + 4 engines, stopped on exit
        view = rc.load_balanced_view()
        squares = view.map_sync(lambda x: x * x, range(100))
        dv = rc[:]
        dv.push({"a": 5})
        print(dv.apply_sync(lambda: a))               # [5, 5, 5, 5]

``Client(profile=…)`` connects to a cluster started with ``ferrocluster start`` (the
``cluster`` command, compiled into this package). Functions and their arguments travel with
cloudpickle; each engine runs them in one persistent Python worker, whose globals are the
engine's namespace. The wire, signing, encryption, batching and resubmission are the Rust
client's. ``%load_ext ferrocluster`` gives ``%px`` in IPython.
"""

_EXPORTS = {
    "Client": "_client",
    "Cluster": "_cluster",
    "AsyncResult": "_result",
    "AsyncMapResult": "_result",
    "DirectView": "_view",
    "LoadBalancedView": "_view",
    "ViewExecutor": "_executor",
    "task_client": "_client",
    "Queue": "_objects",
    "Namespace": "_objects",
    "Lock": "_objects",
    "Semaphore": "_objects",
    "Event": "_objects",
    "load_ipython_extension": "_magics",
    "unload_ipython_extension": "_magics",
}
for _name in ("ClusterError", "ConnectionFileError", "ConnectTimeoutError",
              "ConnectionLostError", "TimeoutError", "TaskTimeout", "TooLargeError",
              "ShutdownError", "RemoteError", "CompositeError", "EngineError",
              "UnknownFunctionError", "TaskAborted", "DependencyError",
              "ImpossibleDependency", "NoEnginesError", "ObjectError", "ObjectNameError",
              "ObjectKindError", "ObjectLimitError", "LeaseLostError"):
    _EXPORTS[_name] = "_errors"

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    # Lazy, so that `python -m ferrocluster engine` (every engine process) imports nothing
    # it does not use.
    module = _EXPORTS.get(name)
    if module is None:
        if name == "__version__":
            from importlib.metadata import version
            return version("ferrocluster")
        raise AttributeError("module 'ferrocluster' has no attribute %r" % name)
    import importlib
    value = getattr(importlib.import_module("." + module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__ + ["__version__"]
