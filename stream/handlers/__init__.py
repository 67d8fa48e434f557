"""HTTP handlers by area; ``stream/routes.py`` is the one table that maps paths to them.

Each area is a small class built with exactly what it needs (no runtime object to reach
through); its methods take the aiohttp request and return a response. Status codes are decided
here and in ``stream/http.py``, never in the core.
"""
