"""The front door: the ``offerstream`` command line, the demo, an HTTP client and the demo page.

It sits above the two sibling packages it uses, ``stream`` (the worker) and ``training``
(offline retraining), which never import each other or this package.
"""
