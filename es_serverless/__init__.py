"""Create, update, delete and query tenant Elasticsearch clusters of the yunpeng.es_serverless collection.

The Python API (``es_serverless.api``), the ``es-serverless`` command (``es_serverless.cli``) and the HTTP
API (``es_serverless.server``) all run the collection's playbooks through ansible-runner.
"""

from es_serverless.api import (  # noqa: F401
    ApiError,
    RunResult,
    create_cluster,
    delete_cluster,
    follow,
    get_deployment,
    list_deployments,
    log,
    query,
    reports,
    to_request,
    update_cluster,
)
