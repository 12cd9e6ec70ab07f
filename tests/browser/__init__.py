"""A package, so that this folder's conftest.py imports as ``browser.conftest`` and does not replace the
top-level ``conftest`` module that test files import helpers from (``from conftest import dataset_path``)."""
