"""The local Dask cluster the extract flow starts listens on loopback only."""

from __future__ import annotations

import pytest


@pytest.mark.integration
def test_local_dask_cluster_listens_only_on_loopback():
    pytest.importorskip("prefect_dask")  # the optional extra `dask` (make install has it)
    import psutil
    from distributed import LocalCluster

    from flows.extract import make_task_runner

    runner = make_task_runner("dask", None, 1)
    with LocalCluster(**runner.cluster_kwargs) as cluster:
        me = psutil.Process()
        listening = [
            (p.pid, c.laddr.ip, c.laddr.port)
            for p in [me, *me.children(recursive=True)]
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        dashboard = cluster.dashboard_link
    assert len(listening) >= 3  # scheduler, dashboard, worker (and its nanny)
    assert all(ip == "127.0.0.1" for _, ip, _ in listening), listening  # dashboard was 0.0.0.0
    assert dashboard.startswith("http://127.0.0.1:")
