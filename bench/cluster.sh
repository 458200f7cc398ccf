#!/usr/bin/env bash
# The original platform's `cluster.sh create`, rebuilt from the flow in
# shared/spec/provisioning.md and the README, as the baseline of bench/run:
# the same stages, one kubectl invocation per Kubernetes step, and the same
# report files, log lines, tenant record and deployments.json statuses as the
# collection writes. It is a benchmark baseline, not a supported tool: no
# GitLab pull, no quota, no update or name-collision rules.
#
#   bench/cluster.sh create --user U --service S --namespace NS --data-dir DIR \
#       [--replicas 1] [--cpu-request 500m] [--cpu-limit 2] [--mem-request 1Gi] [--mem-limit 2Gi] \
#       [--disk-size 10Gi] [--gpu-count 0] [--dimension 128] [--vector-count 10000] \
#       [--index-limit 100] [--tenant-org-id ""] [--log-file DIR/deployment.log] [--timeout 600]
#
# Needs kubectl (KUBECONFIG or ~/.kube/config), jq, flock and GNU date.
set -euo pipefail

KUBECTL=${KUBECTL:-kubectl}
ES_IMAGE=${ES_IMAGE:-docker.elastic.co/elasticsearch/elasticsearch:8.15.3}
KIBANA_IMAGE=${KIBANA_IMAGE:-docker.elastic.co/kibana/kibana:8.15.3}

usage() { sed -n '2,14p' "$0" >&2; exit 2; }

[ "${1:-}" = create ] || usage
shift
user="" service="" namespace="" data_dir="" log_file=""
replicas=1 cpu_request=500m cpu_limit=2 mem_request=1Gi mem_limit=2Gi disk_size=10Gi gpu_count=0
dimension=128 vector_count=10000 index_limit=100 tenant_org_id="" timeout=600
while [ $# -gt 0 ]; do
  case "$1" in
    --user) user=$2 ;;
    --service) service=$2 ;;
    --namespace) namespace=$2 ;;
    --data-dir) data_dir=$2 ;;
    --log-file) log_file=$2 ;;
    --replicas) replicas=$2 ;;
    --cpu-request) cpu_request=$2 ;;
    --cpu-limit) cpu_limit=$2 ;;
    --mem-request) mem_request=$2 ;;
    --mem-limit) mem_limit=$2 ;;
    --disk-size) disk_size=$2 ;;
    --gpu-count) gpu_count=$2 ;;
    --dimension) dimension=$2 ;;
    --vector-count) vector_count=$2 ;;
    --index-limit) index_limit=$2 ;;
    --tenant-org-id) tenant_org_id=$2 ;;
    --timeout) timeout=$2 ;;
    *) usage ;;
  esac
  shift 2
done

name_re='^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'
[[ $user =~ $name_re && $user != *..* ]] || { echo "cluster.sh: bad --user" >&2; exit 2; }
[[ $service =~ $name_re && $service != *..* ]] || { echo "cluster.sh: bad --service" >&2; exit 2; }
[[ $namespace =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || { echo "cluster.sh: bad --namespace" >&2; exit 2; }
[ -n "$data_dir" ] || usage
for n in replicas gpu_count dimension vector_count index_limit timeout; do
  [[ ${!n} =~ ^[0-9]+$ ]] || { echo "cluster.sh: --${n//_/-} must be a number" >&2; exit 2; }
done

mkdir -p "$data_dir/deployment_reports" "$data_dir/tenant_data"
data_dir=$(cd "$data_dir" && pwd)
log_file=${log_file:-$data_dir/deployment.log}
reports_dir=$data_dir/deployment_reports
tenant_file=$data_dir/tenant_data/${user}_${service}.json
deployments=$data_dir/deployments.json
lock=$data_dir/.lock
key="$user/$service"
deployment_id=$(head -c 15 /dev/urandom | od -An -tx1 | tr -d ' \n' | cut -c1-20)
stage=metadata
namespace_created=false

exec 9>>"$lock"
locked() { flock 9; "$@"; local rc=$?; flock -u 9; return $rc; }

# Atomic write: temp file in the same folder, then rename.
write_file() { # path content
  local tmp
  tmp=$(mktemp "$(dirname "$1")/.tmp.XXXXXX")
  printf '%s\n' "$2" >"$tmp"
  mv -f "$tmp" "$1"
}

request_json() {
  jq -n --arg user "$user" --arg service "$service" --arg ns "$namespace" --argjson replicas "$replicas" \
    --arg cr "$cpu_request" --arg cl "$cpu_limit" --arg mr "$mem_request" --arg ml "$mem_limit" \
    --arg disk "$disk_size" --argjson gpu "$gpu_count" --argjson dim "$dimension" --argjson vc "$vector_count" \
    --argjson il "$index_limit" --arg org "$tenant_org_id" \
    '{user: $user, service_name: $service, namespace: $ns, replicas: $replicas, cpu_request: $cr,
      cpu_limit: $cl, mem_request: $mr, mem_limit: $ml, disk_size: $disk, gpu_count: $gpu, dimension: $dim,
      vector_count: $vc, index_limit: $il, tenant_org_id: $org}'
}
request=$(request_json)

# One report: its own file deployment_reports/{user}_{service}_{YYYYMMDDTHHMMSS.ffffff}Z.json and one log line.
_report() { # status message [details-json]
  local stamp fts iso body
  stamp=$(date -u '+%Y%m%dT%H%M%S.%6NZ %Y-%m-%dT%H:%M:%SZ')
  fts=${stamp% *} iso=${stamp#* }
  body=$(jq -n --arg status "$1" --arg message "$2" --arg ts "$iso" --arg user "$user" --arg service "$service" \
    --arg ns "$namespace" --arg id "$deployment_id" --argjson details "${3:-null}" \
    '{status: $status, message: $message, timestamp: $ts, user: $user, service_name: $service, namespace: $ns,
      deployment_id: $id} + (if $details == null then {} else {details: $details} end)')
  write_file "$reports_dir/${user}_${service}_${fts}.json" "$body"
  printf '%s - User: %s, Service: %s, Namespace: %s, Status: %s, Message: %s\n' \
    "$iso" "$user" "$service" "$namespace" "$1" "$2" >>"$log_file"
}
report() { locked _report "$@"; }

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# deployments.json: {"user/service": entry}; jq filter applied to the entry under the lock.
_set_deployment() { # jq-filter-on-entry
  local current
  current=$(cat "$deployments" 2>/dev/null || echo '{}')
  [ -n "$current" ] || current='{}'
  write_file "$deployments" "$(jq --arg key "$key" --arg now "$(now)" "(.[\$key] |= ($1 | .updated_at = \$now))" \
    <<<"$current")"
}

# ---------------------------------------------------------------- rollback
on_error() {
  local rc=$? error
  trap - ERR
  set +e
  error="command failed with exit code $rc"
  if [ "$namespace_created" = true ]; then
    $KUBECTL delete namespace "$namespace" --wait=false >/dev/null 2>&1
  fi
  locked rm -f "$tenant_file"
  locked _set_deployment "{user: \"$user\", service_name: \"$service\", namespace: \"$namespace\",
    deployment_id: \"$deployment_id\", status: \"failed\", stage: \"$stage\", error: \"$error\",
    created_at: (.created_at // \$now), reports_dir: \"$reports_dir\"}"
  report failed "Cluster creation failed at stage $stage: $error"
  exit "$rc"
}
trap on_error ERR

# ---------------------------------------------------------------- stage 0: metadata
_begin() {
  local status
  status=$(jq -r --arg key "$key" '.[$key].status // ""' "$deployments" 2>/dev/null || true)
  case "$status" in
    creating|created) trap - ERR; echo "cluster.sh: $key is already $status" >&2; exit 3 ;;
  esac
  local stamp
  stamp=$(now)
  write_file "$tenant_file" "$(jq --arg status creating --arg at "$stamp" --arg id "$deployment_id" \
    '{user, service_name, namespace, replicas, cpu: "\(.cpu_request)/\(.cpu_limit)",
      memory: "\(.mem_request)/\(.mem_limit)", disk: .disk_size, gpu_count, dimension, vector_count,
      index_limit, tenant_org_id, status: $status, created_at: $at, deployment_id: $id}' <<<"$request")"
  _set_deployment "{user: \"$user\", service_name: \"$service\", namespace: \"$namespace\",
    deployment_id: \"$deployment_id\", status: \"creating\", stage: null, error: null, created_at: \$now,
    reports_dir: \"$reports_dir\", request: $request}"
}
locked _begin

# ---------------------------------------------------------------- 1 starting
stage=start
report starting "Starting cluster creation" "$request"

# ---------------------------------------------------------------- 2 namespace
stage=namespace
if ! $KUBECTL get namespace "$namespace" >/dev/null 2>&1; then namespace_created=true; fi
$KUBECTL apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $namespace
  labels:
    es-cluster: "true"
EOF
report namespace_created "Namespace created successfully"

# ---------------------------------------------------------------- 3 gitlab (no URL: skipped, still reported)
stage=gitlab
report gitlab_pulled "GitLab pull skipped: no GitLab URL configured" '{"skipped": true}'

# ---------------------------------------------------------------- 4 core resources
stage=k8s_apply
password=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | cut -c1-32)
labels='{"app.kubernetes.io/managed-by": "es-serverless", "app.kubernetes.io/part-of": "es-serverless-tenant"'
annotations="{\"es.yunpeng.cn/user\": \"$user\", \"es.yunpeng.cn/service-name\": \"$service\", \
\"es.yunpeng.cn/deployment-id\": \"$deployment_id\"}"
if [ "$replicas" -eq 1 ]; then
  discovery='discovery.type: single-node'
else
  masters=$(seq 0 $((replicas - 1)) | sed 's/^/"elasticsearch-/; s/$/"/' | paste -sd, -)
  discovery=$(printf 'discovery.seed_hosts: ["elasticsearch-headless"]\ncluster.initial_master_nodes: [%s]' "$masters")
fi
es_yml=$(printf '%s\n' "cluster.name: \"$service\"" 'node.name: "${HOSTNAME}"' 'network.host: "0.0.0.0"' \
  'http.port: 9200' 'transport.port: 9300' 'path.data: /usr/share/elasticsearch/data' "$discovery" \
  'xpack.security.enabled: true' 'xpack.security.http.ssl.enabled: false' 'action.destructive_requires_name: true')
es_yml_json=$(jq -Rs . <<<"$es_yml")
$KUBECTL apply -n "$namespace" -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: elasticsearch-config
  labels: $labels, "app": "elasticsearch"}
  annotations: $annotations
data:
  elasticsearch.yml: $es_yml_json
---
apiVersion: v1
kind: Secret
type: Opaque
metadata:
  name: elasticsearch-credentials
  labels: {"app": "elasticsearch", "app.kubernetes.io/managed-by": "es-serverless"}
stringData:
  elastic-password: "$password"
---
apiVersion: v1
kind: Service
metadata:
  name: elasticsearch
  labels: $labels, "app": "elasticsearch"}
  annotations: $annotations
spec:
  selector: {app: elasticsearch}
  ports:
    - {name: http, port: 9200, targetPort: 9200, protocol: TCP}
    - {name: transport, port: 9300, targetPort: 9300, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata:
  name: elasticsearch-headless
  labels: $labels, "app": "elasticsearch"}
  annotations: $annotations
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: elasticsearch}
  ports:
    - {name: http, port: 9200, targetPort: 9200, protocol: TCP}
    - {name: transport, port: 9300, targetPort: 9300, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata:
  name: kibana
  labels: $labels, "app": "kibana"}
  annotations: $annotations
spec:
  selector: {app: kibana}
  ports:
    - {name: http, port: 5601, targetPort: 5601, protocol: TCP}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: elasticsearch-data-elasticsearch-0
  labels: {app: elasticsearch}
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: "$disk_size"
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: elasticsearch
  labels: $labels, "app": "elasticsearch"}
  annotations: {"es.yunpeng.cn/user": "$user", "es.yunpeng.cn/service-name": "$service",
                "es.yunpeng.cn/deployment-id": "$deployment_id", "es.yunpeng.cn/vector-dimension": "$dimension",
                "es.yunpeng.cn/vector-count": "$vector_count"}
spec:
  serviceName: elasticsearch-headless
  podManagementPolicy: Parallel
  selector:
    matchLabels: {app: elasticsearch}
  updateStrategy:
    type: RollingUpdate
  template:
    metadata:
      labels: $labels, "app": "elasticsearch"}
    spec:
      containers:
        - name: elasticsearch
          image: "$ES_IMAGE"
          imagePullPolicy: IfNotPresent
          env:
            - name: ELASTIC_PASSWORD
              valueFrom:
                secretKeyRef: {name: elasticsearch-credentials, key: elastic-password}
          ports:
            - {name: http, containerPort: 9200, protocol: TCP}
            - {name: transport, containerPort: 9300, protocol: TCP}
          readinessProbe:
            tcpSocket: {port: 9200}
            initialDelaySeconds: 10
            periodSeconds: 10
          volumeMounts:
            - {name: elasticsearch-data, mountPath: /usr/share/elasticsearch/data}
            - {name: config, mountPath: /usr/share/elasticsearch/config/elasticsearch.yml, subPath: elasticsearch.yml}
      volumes:
        - name: config
          configMap: {name: elasticsearch-config}
  volumeClaimTemplates:
    - metadata:
        name: elasticsearch-data
        labels: {app: elasticsearch}
      spec:
        accessModes: [ReadWriteOnce]
        resources:
          requests:
            storage: "$disk_size"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: kibana
  labels: $labels, "app": "kibana"}
  annotations: $annotations
spec:
  replicas: 1
  selector:
    matchLabels: {app: kibana}
  template:
    metadata:
      labels: $labels, "app": "kibana"}
    spec:
      containers:
        - name: kibana
          image: "$KIBANA_IMAGE"
          imagePullPolicy: IfNotPresent
          env:
            - {name: ELASTICSEARCH_HOSTS, value: "http://elasticsearch.$namespace.svc:9200"}
          ports:
            - {name: http, containerPort: 5601, protocol: TCP}
EOF
objects=$(jq -nc --arg ns "$namespace" '[["ConfigMap","v1","elasticsearch-config"],["Secret","v1",
  "elasticsearch-credentials"],["Service","v1","elasticsearch"],["Service","v1","elasticsearch-headless"],
  ["Service","v1","kibana"],["PersistentVolumeClaim","v1","elasticsearch-data-elasticsearch-0"],
  ["StatefulSet","apps/v1","elasticsearch"],["Deployment","apps/v1","kibana"]]
  | map({kind: .[0], api_version: .[1], name: .[2], namespace: $ns})')
report k8s_applied "Kubernetes resources applied successfully" "{\"objects\": $objects}"

# ---------------------------------------------------------------- 5 max-indices, replicas, cpu/memory
stage=resources
$KUBECTL -n "$namespace" patch statefulset elasticsearch --type strategic -p "$(jq -nc \
  --arg il "$index_limit" --argjson r "$replicas" --arg cr "$cpu_request" --arg cl "$cpu_limit" \
  --arg mr "$mem_request" --arg ml "$mem_limit" \
  '{metadata: {annotations: {"es.yunpeng.cn/max-indices": $il}}, spec: {replicas: $r, template: {spec: {containers:
    [{name: "elasticsearch", resources: {requests: {cpu: $cr, memory: $mr}, limits: {cpu: $cl, memory: $ml}}}]}}}}')" \
  >/dev/null
report resources_configured "Cluster resources configured successfully" "$(jq -nc --argjson il "$index_limit" \
  --argjson r "$replicas" --arg cr "$cpu_request" --arg cl "$cpu_limit" --arg mr "$mem_request" --arg ml "$mem_limit" \
  '{max_indices: $il, replicas: $r, requests: {cpu: $cr, memory: $mr}, limits: {cpu: $cl, memory: $ml}}')"

# ---------------------------------------------------------------- 6 disk
stage=disk
$KUBECTL -n "$namespace" patch persistentvolumeclaim elasticsearch-data-elasticsearch-0 --type merge \
  -p "{\"spec\": {\"resources\": {\"requests\": {\"storage\": \"$disk_size\"}}}}" >/dev/null
report disk_configured "Disk size configured to $disk_size" \
  "{\"pvcs\": [{\"name\": \"elasticsearch-data-elasticsearch-0\", \"new\": \"$disk_size\"}]}"

# ---------------------------------------------------------------- 7 gpu (only when gpu_count > 0)
if [ "$gpu_count" -gt 0 ]; then
  stage=gpu
  $KUBECTL -n "$namespace" patch statefulset elasticsearch --type strategic -p "{\"spec\": {\"template\": {\"spec\":
    {\"containers\": [{\"name\": \"elasticsearch\", \"resources\": {\"limits\": {\"nvidia.com/gpu\": $gpu_count}}}]}}}}" \
    >/dev/null
  report gpu_configured "GPU count configured to $gpu_count" "{\"gpu_count\": $gpu_count}"
fi

# ---------------------------------------------------------------- 8 rollout
stage=rollout
$KUBECTL -n "$namespace" rollout status statefulset/elasticsearch --timeout="${timeout}s" >/dev/null
$KUBECTL -n "$namespace" rollout status deployment/kibana --timeout="${timeout}s" >/dev/null
report rollout_completed "Cluster rollout completed successfully"

# ---------------------------------------------------------------- 9 tenant record with the full configuration
stage=tenant_sync
_sync() {
  write_file "$tenant_file" "$(jq --arg at "$(now)" --argjson req "$request" --argjson objects "$objects" '. + {
    resources: {namespace: $req.namespace, replicas: $req.replicas,
      requests: {cpu: $req.cpu_request, memory: $req.mem_request},
      limits: {cpu: $req.cpu_limit, memory: $req.mem_limit, "nvidia.com/gpu": $req.gpu_count},
      disk_size: $req.disk_size, storage_class: "cluster default", max_indices: $req.index_limit,
      objects: $objects, gitlab: null,
      endpoints: {elasticsearch: "http://elasticsearch.\($req.namespace).svc:9200",
                  kibana: "http://kibana.\($req.namespace).svc:5601"},
      credentials_secret: "elasticsearch-credentials"},
    synced_at: $at}' "$tenant_file")"
  _set_deployment '.'
}
locked _sync
report tenant_synced "Data synced to tenant container management"

# ---------------------------------------------------------------- 10 completed
stage=complete
report completed "Cluster creation completed successfully" "$request"
_complete() {
  write_file "$tenant_file" "$(jq --arg at "$(now)" '.status = "created" | .sync_time = $at' "$tenant_file")"
  _set_deployment '.status = "created" | .stage = null | .error = null'
}
locked _complete
