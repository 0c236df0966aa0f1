"""Rich renderers: each takes data and a `rich.console.Console` and only prints.

Commands call the library, then hand its result to a renderer here; nothing in this package
reads files, talks to hosts or decides anything.
"""
