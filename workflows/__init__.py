"""Argo Workflows v4 objects of the platform, written with Hera 7.

One module per workflow (``incremental_load``, ``train``, ``drift_check``) built from the
shared defaults in ``common``. ``python -m workflows render`` writes them as YAML into the
Helm chart; ``python -m workflows submit NAME`` starts one on an Argo server;
``workflows.local_executor`` runs the rendered YAML as local processes (tests, dev).
"""

from __future__ import annotations
