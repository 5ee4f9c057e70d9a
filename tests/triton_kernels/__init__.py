"""The Triton kernel tests (a package, so that its conftest is ``triton_kernels.conftest``, not a
second top-level ``conftest`` that would shadow ``tests/conftest.py`` for ``from conftest import ...``)."""
