"""@view.parallel and @view.remote."""

import ferrocluster as fc

if __name__ == "__main__":
    with fc.Cluster(n=2) as rc:
        view = rc.load_balanced_view()

        @view.parallel(block=True)
        def squares(xs):  # gets a part of the sequence per call
            return [x * x for x in xs]

        @view.parallel(block=True)
        def cube(x):  # .map applies it to each item
            return x ** 3

        @view.remote(block=True)
        def where():
            import os
            return os.getpid()

        print("parallel call:", squares(range(10)))
        print("parallel map:", cube.map(range(5)))
        print("remote call ran in pid", where())
        dv = rc[:]
        dv.push({"a": 5}, block=True)
        print("engine namespace:", dv.apply_sync(lambda: a))  # noqa: F821
