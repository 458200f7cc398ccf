#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2024, ES Serverless platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# ruff: noqa: E402 -- Ansible plugins keep DOCUMENTATION before the imports

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: es_tenant_meta
short_description: Record a tenant cluster in the metadata store (create and delete steps)
version_added: "0.1.0"
description:
  - Manages the tenant container record C(<data_dir>/tenant_data/{user}_{service_name}.json)
    and the deployment status in C(<data_dir>/deployments/<user>/<service_name>.json).
  - Every write is atomic and serialized by a lock on C(<data_dir>/.lock), so parallel runs
    (C(--forks), AWX, several C(ansible-playbook) processes) are safe.
  - C(begin) is stage 0. It refuses a create of a cluster that is being created or updated by another
    deployment, a file-name collision with another user/service pair, a namespace used by another
    live cluster, and quota excess (the pair's own cluster counted once, with the new request); then
    it writes the record with status C(creating).
  - For a pair whose cluster is C(created), C(begin) starts an update instead. It refuses another
    namespace and a smaller disk, naming the field, and records the running update in the entry
    (C(update)). The tenant record and the status stay those of the live cluster.
  - C(sync) is stage 9 (full resource configuration in the record), C(complete) marks both records
    C(created) (for an update, its deployment becomes the live one), C(fail) is the rollback, with
    the record of this run deleted and the deployment status C(failed); for an update, the previous
    record put back, the status left C(created) and the failure kept in the entry's C(last_update).
    For an invalid user or service name (a refused request, there is no tenant) C(fail) writes
    nothing; its failed report goes under the identity C(_refused).
  - C(begin_delete) starts a delete (deployment status C(deleting) under this I(deployment_id)). It
    refuses, writing nothing, a pair without a deployment status (RV(unknown_tenant)), a cluster that
    another deployment is creating or deleting, one already deleted, and one whose namespace another
    live cluster holds. C(complete_delete) deletes the tenant record, sets the status C(deleted) and
    releases the namespace; the reports and the status entry stay. C(fail_delete) records a failed
    delete (status C(failed) with I(stage) and I(error), tenant record deleted, namespace released)
    and changes nothing when the delete did not begin.
  - A running create, update or delete holds a lease in the deployment status (C(lease), for an update
    in C(update.lease)), the host, boot and pid (with its start time) of its C(ansible-playbook)
    process and an expiry that every report of the run moves on. C(begin) and C(begin_delete) take
    over a run of the pair whose lease says it died (its process is gone from this host, or a run of
    another host did not report for an hour, or its lease was released) instead of refusing; see
    RV(took_over). C(begin) refuses a delete that died (run the delete again).
  - C(release) releases the lease of the running I(deployment_id) of the pair, for a run whose host
    is gone; it is refused for a run still alive on this host. The next C(begin) or C(begin_delete)
    then takes it over.
author:
  - ES Serverless platform team (@yunpeng)
attributes:
  check_mode:
    support: full
    description: In check mode every rule is checked and the would-be records are returned; nothing is written.
options:
  data_dir:
    description: Data folder holding C(tenant_data/), C(deployments/) and C(deployment_reports/).
    type: path
    required: true
  state:
    description: Which step of the flow to record.
    type: str
    required: true
    choices: [begin, sync, complete, fail, begin_delete, complete_delete, fail_delete, release]
  request:
    description:
      - The tenant request (normally the C(request) returned by M(yunpeng.es_serverless.es_request)).
      - Required for C(begin), C(sync) and C(complete); validated again here.
      - For C(fail) only its C(user), C(service_name) and C(namespace) are used, unvalidated; for the
        delete states only its C(user) and C(service_name).
    type: dict
  deployment_id:
    description:
      - Id shared by all records and reports of one run.
      - For C(release), the running deployment whose lease is released.
    type: str
    required: true
  log_file:
    description:
      - Deployment log for the C(failed) report of a run that C(begin) or C(begin_delete) takes over.
      - Default C(<data_dir>/deployment.log).
    type: path
  quota:
    description:
      - Per-user quota for C(begin). Missing keys take their default.
      - C(max_clusters_per_user) (default 5) counts live (creating or created) clusters.
      - C(max_replicas_per_cluster) (default 10).
      - C(max_cpu_per_user) (default C("64")), sum of cpu_limit x replicas over the user's live clusters.
      - C(max_memory_per_user) (default C("256Gi")), sum of mem_limit x replicas.
      - C(max_disk_per_user) (default C("2Ti")), sum of disk_size x replicas.
      - C(max_gpus_per_user) (default 8), sum of gpu_count x replicas.
    type: dict
    default: {}
  resources:
    description: For C(sync), the full resource configuration stored under C(resources) in the tenant record.
    type: dict
  stage:
    description: For C(fail) and C(fail_delete), the stage that failed.
    type: str
  error:
    description: For C(fail) and C(fail_delete), the error of the failed stage.
    type: str
  user:
    description: For C(fail), C(release) and the delete states when there is no I(request), the user as given.
    type: str
  service_name:
    description: For C(fail), C(release) and the delete states when there is no I(request), the service name
      as given.
    type: str
  namespace:
    description: For C(fail) when there is no I(request), the namespace as given.
    type: str
"""

EXAMPLES = r"""
- name: Stage 0, record the tenant and set status creating
  yunpeng.es_serverless.es_tenant_meta:
    data_dir: "{{ es_data_dir }}"
    state: begin
    request: "{{ es_req.request }}"
    deployment_id: "{{ es_deployment_id }}"
    quota:
      max_clusters_per_user: 5
      max_cpu_per_user: "64"

- name: Stage 9, store the resource configuration
  yunpeng.es_serverless.es_tenant_meta:
    data_dir: "{{ es_data_dir }}"
    state: sync
    request: "{{ es_req.request }}"
    deployment_id: "{{ es_deployment_id }}"
    resources:
      images:
        elasticsearch: docker.elastic.co/elasticsearch/elasticsearch:8.15.3

- name: Rollback, record the failure
  yunpeng.es_serverless.es_tenant_meta:
    data_dir: "{{ es_data_dir }}"
    state: fail
    user: "{{ es_user }}"
    service_name: "{{ es_service_name }}"
    namespace: "{{ es_namespace }}"
    deployment_id: "{{ es_deployment_id }}"
    stage: k8s_applied
    error: "{{ ansible_failed_result.msg }}"

- name: Delete, stage 0
  yunpeng.es_serverless.es_tenant_meta:
    data_dir: "{{ es_data_dir }}"
    state: begin_delete
    user: test_user
    service_name: test_service
    deployment_id: "{{ es_deployment_id }}"

# The host of a crashed run is gone: release its lease, so that the next create or
# delete of the pair takes it over at once.
- name: Release the lease of a dead run
  yunpeng.es_serverless.es_tenant_meta:
    data_dir: /var/lib/es-serverless
    state: release
    user: test_user
    service_name: test_service
    deployment_id: 8xk2m4q7w9z1c3v5b6n0
"""

RETURN = r"""
record:
  description: The tenant container record after the step (C(None) for C(fail) and the delete states).
  returned: always
  type: dict
  sample:
    user: test_user
    service_name: test_service
    namespace: es-test
    replicas: 1
    cpu: 500m/2
    memory: 1Gi/2Gi
    disk: 10Gi
    gpu_count: 0
    dimension: 128
    vector_count: 10000
    index_limit: 100
    tenant_org_id: ""
    status: creating
    created_at: "2024-01-01T00:00:00Z"
    deployment_id: "20240101T000000-abc123"
deployment:
  description: The deployment status entry of the pair after the step.
  returned: always
  type: dict
  sample:
    user: test_user
    service_name: test_service
    namespace: es-test
    deployment_id: "20240101T000000-abc123"
    status: failed
    stage: k8s_applied
    error: the API server refused the StatefulSet
    created_at: "2024-01-01T00:00:00Z"
    updated_at: "2024-01-01T00:00:05Z"
    reports_dir: /var/lib/es_serverless/deployment_reports
operation:
  description:
    - For C(begin), C(create) for a new cluster, C(update) when the pair has a created cluster that
      this run converges to the request (its previous request is in RV(previous_request)).
  returned: when state is begin
  type: str
  sample: update
previous_request:
  description: For C(begin) of an update, the request the live cluster was made with; C(None) otherwise.
  returned: when state is begin
  type: dict
cluster_deployment_id:
  description:
    - For C(begin), the deployment that created the cluster (this run's for a new cluster). The
      cluster's objects carry it, so that an update with the same request changes nothing.
  returned: when state is begin
  type: str
record_deleted:
  description: For C(fail), whether this run's tenant record was deleted; for C(complete_delete) and
    C(fail_delete), whether the pair's tenant record was.
  returned: when state is fail, complete_delete or fail_delete
  type: bool
status_changed:
  description:
    - For C(fail), whether the deployment status was set to C(failed). False when the pair's status
      belongs to another live deployment (a refused second run never touches it) or the user or
      service name is invalid.
    - For C(fail_delete), whether it was set to C(failed), false when the delete was refused before it began.
  returned: when state is fail or fail_delete
  type: bool
took_over:
  description:
    - For C(begin) and C(begin_delete), the run of the pair that died and was taken over, or C(None).
    - It is recorded failed at stage C(run_died) (a create's status C(failed), an update's failure in
      C(last_update), a delete's status C(failed)) with its C(failed) report and log line (C(report), the file name).
    - What it left in Kubernetes is removed by the flow that took it over.
  returned: when state is begin or begin_delete
  type: dict
  sample:
    deployment_id: 8xk2m4q7w9z1c3v5b6n0
    operation: create
    namespace: es-test
    stage: run_died
    error: "the run died: ansible-playbook pid 4242 on host ctl1 is gone, after its report k8s_applied;
      deployment q1w2e3r4t5y6u7i8o9p0 took over"
    report: test_user_test_service_20240101T000010.000000Z.json
unknown_tenant:
  description: For C(begin_delete), true when it failed because the pair has no deployment status.
  returned: when state is begin_delete
  type: bool
"""

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import entry
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.request import RequestError
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.store import (
    MetadataStore,
    StoreError,
    UnknownTenant,
)

ARGUMENT_SPEC = dict(
    argument_spec=dict(
        data_dir=dict(type="path", required=True),
        state=dict(type="str", required=True,
                   choices=["begin", "sync", "complete", "fail", "begin_delete", "complete_delete", "fail_delete",
                            "release"]),
        request=dict(type="dict"),
        deployment_id=dict(type="str", required=True),
        quota=dict(type="dict", default={}),
        resources=dict(type="dict"),
        stage=dict(type="str"),
        error=dict(type="str"),
        user=dict(type="str"),
        service_name=dict(type="str"),
        namespace=dict(type="str"),
        log_file=dict(type="path"),
    ),
    required_if=[
        ("state", "begin", ("request",)),
        ("state", "sync", ("request",)),
        ("state", "complete", ("request",)),
        ("state", "fail", ("stage", "error")),
        ("state", "fail_delete", ("stage", "error")),
    ],
    supports_check_mode=True,
)


def run(params, check_mode, warn):
    state = params["state"]
    store = MetadataStore(params["data_dir"])
    check = check_mode
    result = dict(changed=False, record=None, deployment=None)
    try:
        if state == "begin":
            result["record"] = store.begin(params["request"], params["deployment_id"], params["quota"],
                                           check_only=check, log_file=params["log_file"])
            result["took_over"] = store.took_over
            req = params["request"]
            live = store.get_deployment(req["user"], req["service_name"]) or {}
            result["deployment"] = live or None
            # begin succeeded: a created cluster of another deployment means this run updates it
            updating = live.get("status") == "created" and live.get("deployment_id") != params["deployment_id"]
            result["operation"] = "update" if updating else "create"
            result["previous_request"] = live.get("request") if updating else None
            result["cluster_deployment_id"] = (live.get("created_by") or live.get("deployment_id")
                                               if updating else params["deployment_id"])
            result["changed"] = True
        elif state == "sync":
            result["record"] = store.sync(params["request"], params["deployment_id"], params["resources"] or {},
                                          check_only=check)
            result["deployment"] = store.get_deployment(result["record"]["user"], result["record"]["service_name"])
            result["changed"] = True
        elif state == "complete":
            result["record"], result["deployment"] = store.complete(params["request"], params["deployment_id"],
                                                                    check_only=check)
            result["changed"] = True
        elif state == "release":
            ident = dict(params["request"] or {})
            user, service_name = ident.get("user", params["user"]), ident.get("service_name", params["service_name"])
            if check:
                result["deployment"] = store.get_deployment(user, service_name)
            else:
                result["deployment"] = store.release(user, service_name, params["deployment_id"])
                result["changed"] = True
        elif state in ("begin_delete", "complete_delete", "fail_delete"):
            _delete_step(store, state, params, check, result)
        else:
            ident = dict(params["request"] or {})
            user = ident.get("user", params["user"])
            service_name = ident.get("service_name", params["service_name"])
            namespace = ident.get("namespace", params["namespace"])
            outcome = store.fail(user, service_name, namespace, params["deployment_id"], params["stage"],
                                 params["error"], check_only=check)
            result["deployment"] = outcome["deployment"]
            result["record_deleted"] = outcome["record_deleted"]
            result["status_changed"] = outcome["status_changed"]
            result["changed"] = outcome["record_deleted"] or outcome["status_changed"]
    except UnknownTenant as exc:
        raise entry.ModuleFailed(str(exc), unknown_tenant=True, **result)
    except (StoreError, RequestError) as exc:
        raise entry.ModuleFailed(str(exc), **result)
    except (OSError, ValueError) as exc:
        raise entry.ModuleFailed("metadata store %s: %s" % (store.data_dir, exc), **result)
    return result


def _delete_step(store, state, params, check, result):
    ident = dict(params["request"] or {})
    user = ident.get("user", params["user"])
    service_name = ident.get("service_name", params["service_name"])
    if state == "begin_delete":
        result["deployment"] = store.begin_delete(user, service_name, params["deployment_id"], check_only=check,
                                                  log_file=params["log_file"])
        result["took_over"] = store.took_over
        result["unknown_tenant"] = False
        result["changed"] = True
        return
    if state == "complete_delete":
        outcome = store.complete_delete(user, service_name, params["deployment_id"], check_only=check)
        result["changed"] = True
    else:
        outcome = store.fail_delete(user, service_name, params["deployment_id"], params["stage"], params["error"],
                                    check_only=check)
        result["status_changed"] = outcome["status_changed"]
        result["changed"] = outcome["status_changed"]
    result["deployment"] = outcome["deployment"]
    result["record_deleted"] = outcome["record_deleted"]


def main():
    entry.main(ARGUMENT_SPEC, run)


if __name__ == "__main__":
    main()
