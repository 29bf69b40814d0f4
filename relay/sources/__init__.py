"""Built-in source kinds: every module here that defines one registers it on import.

Importing the package imports each module, so a new platform is one new file.
"""

from importlib import import_module
from pkgutil import iter_modules

for _module in iter_modules(__path__):
    import_module(f"{__name__}.{_module.name}")
