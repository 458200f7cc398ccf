#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: es_rollout
short_description: Wait for a tenant's StatefulSets and Deployments to roll out, failing fast on doomed pods
description:
  - Waits, with the Kubernetes watch API on pods, StatefulSets and Deployments, until every named
    StatefulSet and Deployment in O(namespace) has completed its rollout, with the checks of
    C(kubectl rollout status).
  - Fails at once, without sitting out O(timeout), when a pod of these workloads has a container or
    init container waiting with reason C(ErrImagePull), C(ImagePullBackOff), C(InvalidImageName),
    C(CrashLoopBackOff) or C(CreateContainerConfigError), or cannot be scheduled (C(Unschedulable)),
    except while the scheduler only waits for the pod's PersistentVolumeClaims to be bound (it schedules
    the pod once they are; a claim that is never bound ends in the O(timeout) failure).
    The error names the pod, container, image, reason and the kubelet or scheduler message, and the
    result carries the pod's recent Warning events.
  - Fails when a Deployment reports C(ProgressDeadlineExceeded), when a workload does not exist,
    and at O(timeout) with what is still not ready.
  - In check mode the state is evaluated once, without waiting; only a doomed pod fails.
version_added: "1.0.0"
author:
  - ES Serverless platform team (@yunpeng)
extends_documentation_fragment:
  - yunpeng.es_serverless.k8s_auth
options:
  namespace:
    description:
      - Namespace of the workloads.
    type: str
    required: true
  statefulsets:
    description:
      - Names of the StatefulSets to wait for.
    type: list
    elements: str
    default: [elasticsearch]
  deployments:
    description:
      - Names of the Deployments to wait for.
    type: list
    elements: str
    default: [kibana]
  timeout:
    description:
      - Seconds to wait for the rollout before failing.
    type: int
    default: 600
attributes:
  check_mode:
    support: full
    description: Evaluates the rollout once and reports it without waiting.
"""

EXAMPLES = r"""
- name: Wait for Elasticsearch and Kibana, failing fast on image pull errors
  yunpeng.es_serverless.es_rollout:
    namespace: es-alice-search
    statefulsets: [elasticsearch]
    deployments: [kibana]
    timeout: 600

- name: Wait for the StatefulSet only, with an explicit kubeconfig
  yunpeng.es_serverless.es_rollout:
    kubeconfig: /etc/es-serverless/kubeconfig
    namespace: es-alice-search
    deployments: []
    timeout: 300
"""

RETURN = r"""
statefulsets:
  description: Rollout status of each StatefulSet.
  returned: when the workloads could be read (success, doomed pod, timeout)
  type: list
  elements: dict
  sample:
    - name: elasticsearch
      done: true
      message: statefulset elasticsearch rolling update complete 1 pods at revision elasticsearch-5d4f8
      replicas: 1
      ready_replicas: 1
      updated_replicas: 1
      current_revision: elasticsearch-5d4f8
      update_revision: elasticsearch-5d4f8
deployments:
  description: Rollout status of each Deployment.
  returned: when the workloads could be read (success, doomed pod, timeout)
  type: list
  elements: dict
  sample:
    - name: kibana
      done: true
      message: deployment kibana successfully rolled out
      replicas: 1
      ready_replicas: 1
      updated_replicas: 1
      available_replicas: 1
pods:
  description: The pods of these workloads.
  returned: when the workloads could be read (success, doomed pod, timeout)
  type: list
  elements: dict
  sample:
    - name: elasticsearch-0
      phase: Running
      ready: true
      owner: StatefulSet/elasticsearch
elapsed:
  description: Seconds spent waiting.
  returned: always
  type: float
  sample: 12.4
ready:
  description: Whether every workload has completed its rollout.
  returned: always
  type: bool
  sample: true
doom:
  description: The pod that made the rollout fail, with its container, image, reason and message.
  returned: when a pod cannot become ready
  type: dict
  sample:
    pod: es-test/elasticsearch-0
    owner: StatefulSet/elasticsearch
    container: elasticsearch
    image: docker.elastic.co/elasticsearch/elasticsearch:8.15.3
    reason: ImagePullBackOff
    message: Back-off pulling image "docker.elastic.co/elasticsearch/elasticsearch:8.15.3"
    text: >-
      pod es-test/elasticsearch-0 container elasticsearch (image docker.elastic.co/elasticsearch/elasticsearch:8.15.3):
      ImagePullBackOff: Back-off pulling image "docker.elastic.co/elasticsearch/elasticsearch:8.15.3"
events:
  description: Recent Warning events of the failing pod (or of the pods not ready at the timeout).
  returned: when a pod cannot become ready, or at the timeout
  type: list
  elements: dict
  sample:
    - pod: elasticsearch-0
      reason: Failed
      message: 'Failed to pull image "docker.elastic.co/elasticsearch/elasticsearch:8.15.3": not found'
      count: 3
      last_timestamp: "2024-01-01T00:00:00Z"
reason:
  description: Why the rollout failed (a pod reason, C(ProgressDeadlineExceeded), C(NotFound) or C(Timeout)).
  returned: when the rollout fails
  type: str
  sample: ImagePullBackOff
"""

import time  # noqa: E402

from ansible.module_utils.basic import missing_required_lib  # noqa: E402

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import entry  # noqa: E402
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.k8s_client import (  # noqa: E402
    HAS_KUBERNETES,
    K8S_AUTH_ARGS,
    RETRY_BUDGET,
    KUBERNETES_IMPORT_ERROR,
    ApiException,
    K8sClientError,
    api_error_message,
    client_from_params,
)
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.rollout import (  # noqa: E402
    RolloutFailed,
    RolloutWaiter,
)

ARGUMENT_SPEC = dict(
    argument_spec=dict(
        K8S_AUTH_ARGS,
        namespace=dict(type="str", required=True),
        statefulsets=dict(type="list", elements="str", default=["elasticsearch"]),
        deployments=dict(type="list", elements="str", default=["kibana"]),
        timeout=dict(type="int", default=600),
    ),
    supports_check_mode=True,
)


def _check(waiter, start):
    """Check mode: the state evaluated once; only a doomed pod fails."""
    try:
        state = waiter.check()
    except RolloutFailed as exc:
        if exc.details.get("reason") == "NotFound":
            return dict(changed=False, ready=False, msg=exc.message, statefulsets=[], deployments=[], pods=[],
                        elapsed=round(time.monotonic() - start, 2))
        raise
    result = dict(changed=False, ready=state["done"], statefulsets=state["statefulsets"],
                  deployments=state["deployments"], pods=state["pods"], elapsed=round(time.monotonic() - start, 2))
    if state["doom"] is not None:
        doom = state["doom"]
        raise entry.ModuleFailed(doom["text"], doom=doom, reason=doom["reason"],
                                 events=waiter.pod_events(doom["pod"].split("/", 1)[1]), **result)
    result["msg"] = "; ".join(state["waiting"]) or "rollout complete"
    return result


def run(params, check_mode, warn):
    if not HAS_KUBERNETES:
        raise entry.ModuleFailed(missing_required_lib("kubernetes"), exception=str(KUBERNETES_IMPORT_ERROR))
    if params["timeout"] < 0:
        raise entry.ModuleFailed("timeout must be 0 or more seconds, got %s" % params["timeout"])

    start = time.monotonic()
    try:
        api_client = client_from_params(params, notify=warn, retry_budget=min(RETRY_BUDGET, max(params["timeout"], 1)))
        waiter = RolloutWaiter(api_client, params["namespace"], params["statefulsets"], params["deployments"],
                               params["timeout"])
        if check_mode:
            return _check(waiter, start)
        result = waiter.wait()
    except RolloutFailed as exc:
        details = dict(exc.details)
        doom = details.get("doom")
        if doom is not None and "reason" not in details:
            details["reason"] = doom["reason"]
        details.setdefault("elapsed", round(time.monotonic() - start, 2))
        raise entry.ModuleFailed(exc.message, changed=False, ready=False, **details)
    except K8sClientError as exc:
        raise entry.ModuleFailed("cannot connect to Kubernetes: %s" % exc, changed=False, ready=False,
                                 elapsed=round(time.monotonic() - start, 2))
    except ApiException as exc:
        raise entry.ModuleFailed("Kubernetes API error while waiting for the rollout in namespace %s: %s" % (
            params["namespace"], api_error_message(exc)), changed=False, ready=False,
            elapsed=round(time.monotonic() - start, 2))
    return dict(result, changed=False, ready=True, msg="rollout complete")


def main():
    entry.main(ARGUMENT_SPEC, run)


if __name__ == "__main__":
    main()
