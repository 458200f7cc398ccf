"""What keeps a tenant's Elasticsearch and Kibana up and secure, field by field: transport and HTTP
TLS from the tenant's own CA (one Secret, created once), Kibana's service-account token, the
vm.max_map_count init container or allow_mmap, readiness that means "joined the cluster",
cluster.initial_master_nodes only while bootstrapping, and the settings a tenant may not override."""

import base64

import yaml
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from tests import ansible_module
from tests.es_tokens import es_parse_token, es_verify_hash
from tests.integration.flow import (
    all_files_text,
    config_checksum,
    output,
    reports,
    run_playbook,
    tenant_record,
    tenant_vars,
)

pytest_plugins = ["tests.gitlabsim.pytest_plugin"]

CERTS = "/usr/share/elasticsearch/config/certs/"
SECRET_KEYS = {"ca.crt", "ca.key", "transport.crt", "transport.key", "http.crt", "http.key", "service_tokens",
               "kibana-token"}
MOUNTED = {"ca.crt", "transport.crt", "transport.key", "http.crt", "http.key"}


def settings(cluster, namespace):
    cm = cluster.core.read_namespaced_config_map("elasticsearch-config", namespace)
    return cm, yaml.safe_load(cm.data["elasticsearch.yml"])


def secret_data(cluster, namespace):
    secret = cluster.core.read_namespaced_secret("elasticsearch-security", namespace)
    return {key: base64.b64decode(value).decode() for key, value in secret.data.items()}


def assert_security(cluster, namespace, replicas, http_tls=True, mmap_init=True):
    cm, es = settings(cluster, namespace)
    # Security and transport TLS, always; HTTP TLS by choice; all from the mounted files.
    assert es["xpack.security.enabled"] is True
    assert es["xpack.security.transport.ssl.enabled"] is True
    assert es["xpack.security.transport.ssl.verification_mode"] == "certificate"
    assert es["xpack.security.transport.ssl.certificate"] == CERTS + "transport.crt"
    assert es["xpack.security.transport.ssl.key"] == CERTS + "transport.key"
    assert es["xpack.security.transport.ssl.certificate_authorities"] == [CERTS + "ca.crt"]
    assert es["xpack.security.http.ssl.enabled"] is http_tls
    if http_tls:
        assert (es["xpack.security.http.ssl.certificate"], es["xpack.security.http.ssl.key"]) == (
            CERTS + "http.crt", CERTS + "http.key")
    else:
        assert not [key for key in es if key.startswith("xpack.security.http.ssl.") and not key.endswith("enabled")]
    assert es["readiness.port"] == 8080
    if mmap_init:
        assert "node.store.allow_mmap" not in es
    else:
        assert es["node.store.allow_mmap"] is False
    if replicas == 1:
        assert es["discovery.type"] == "single-node" and "cluster.initial_master_nodes" not in es
    else:
        assert es["discovery.seed_hosts"] == ["elasticsearch-headless"] and "discovery.type" not in es
        # set while the cluster formed, removed by stage 8 once every node had joined
        assert "cluster.initial_master_nodes" not in es

    sts = cluster.apps.read_namespaced_stateful_set("elasticsearch", namespace)
    pod = sts.spec.template.spec
    assert sts.spec.template.metadata.annotations["es.yunpeng.cn/config-checksum"] == config_checksum(cm.data)
    # Only the sysctl init container is privileged; everything else stays as hardened.
    if mmap_init:
        (init,) = pod.init_containers
        assert init.name == "sysctl" and init.command == ["sysctl", "-w", "vm.max_map_count=262144"]
        assert init.image == pod.containers[0].image
        assert (init.security_context.privileged, init.security_context.run_as_user) == (True, 0)
        assert init.security_context.run_as_non_root is False
        assert init.resources.requests == {"cpu": "10m", "memory": "16Mi"}
        assert init.resources.limits == {"cpu": "100m", "memory": "32Mi"}
    else:
        assert not pod.init_containers
    assert (pod.security_context.run_as_user, pod.security_context.run_as_non_root) == (1000, True)
    (container,) = pod.containers
    assert container.security_context.privileged is False
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.capabilities.drop == ["ALL"]
    probe = container.readiness_probe
    assert probe.tcp_socket.port == 8080 and probe.http_get is None and probe._exec is None
    mounts = {m.name: m for m in container.volume_mounts}
    assert mounts["certs"].mount_path == "/usr/share/elasticsearch/config/certs" and mounts["certs"].read_only
    assert mounts["service-tokens"].mount_path == "/usr/share/elasticsearch/config/service_tokens"
    assert mounts["service-tokens"].sub_path == "service_tokens"
    volumes = {v.name: v for v in pod.volumes}
    certs_volume = volumes["certs"].secret
    assert certs_volume.secret_name == "elasticsearch-security" and certs_volume.default_mode == 0o440
    # The node gets its certificates and keys, never the CA's key.
    assert {item.key for item in certs_volume.items} == MOUNTED
    assert all(item.path == item.key for item in certs_volume.items)
    tokens_volume = volumes["service-tokens"].secret
    assert tokens_volume.secret_name == "elasticsearch-security"
    assert [(i.key, i.path) for i in tokens_volume.items] == [("service_tokens", "service_tokens")]

    # The Secret: CA, certificates for every service and pod of this namespace, the token and its hash.
    data = secret_data(cluster, namespace)
    assert set(data) == SECRET_KEYS
    ca = x509.load_pem_x509_certificate(data["ca.crt"].encode())
    for name in ("transport.crt", "http.crt"):
        cert = x509.load_pem_x509_certificate(data[name].encode())
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        dns = set(sans.get_values_for_type(x509.DNSName))
        assert {"elasticsearch.%s.svc" % namespace, "*.elasticsearch-headless.%s.svc" % namespace,
                "*.elasticsearch-headless.%s.svc.cluster.local" % namespace} <= dns
    account, token_name, token_secret = es_parse_token(data["kibana-token"])
    qualified, stored = data["service_tokens"].rstrip("\n").split(":", 1)
    assert account == "elastic/kibana" and qualified == "elastic/kibana/" + token_name
    assert es_verify_hash(token_secret, stored)
    # The CA certificate is published for clients, without any key.
    published = cluster.core.read_namespaced_config_map("elasticsearch-ca", namespace).data
    assert published == {"ca.crt": data["ca.crt"]} and "PRIVATE KEY" not in published["ca.crt"]

    # Kibana: the service-account token, the CA, the scheme, a readiness probe over HTTP.
    kibana = cluster.apps.read_namespaced_deployment("kibana", namespace).spec.template.spec
    (kb,) = kibana.containers
    env = {e.name: e for e in kb.env}
    scheme = "https" if http_tls else "http"
    assert env["ELASTICSEARCH_HOSTS"].value == "%s://elasticsearch.%s.svc:9200" % (scheme, namespace)
    ref = env["ELASTICSEARCH_SERVICEACCOUNTTOKEN"].value_from.secret_key_ref
    assert (ref.name, ref.key) == ("elasticsearch-security", "kibana-token")
    assert env["ELASTICSEARCH_SSL_CERTIFICATEAUTHORITIES"].value == "/usr/share/kibana/config/certs/ca.crt"
    assert not [e for e in kb.env if e.name in ("ELASTICSEARCH_USERNAME", "ELASTICSEARCH_PASSWORD")]
    (kb_mount,) = kb.volume_mounts
    assert (kb_mount.name, kb_mount.mount_path) == ("ca", "/usr/share/kibana/config/certs")
    (kb_volume,) = kibana.volumes
    assert kb_volume.config_map.name == "elasticsearch-ca" and kb_volume.secret is None
    assert kb.readiness_probe.http_get.path == "/login" and kb.readiness_probe.http_get.port == 5601
    assert kb.readiness_probe.http_get.scheme == "HTTP"
    assert not kibana.init_containers and kb.security_context.privileged is False
    return data


def assert_no_key_leaked(data, data_dir, proc):
    written = all_files_text(data_dir) + output(proc)
    for key in ("ca.key", "transport.key", "http.key", "kibana-token"):
        assert data[key].strip() not in written, key
    # The body of a PEM key, line by line: not even part of one.
    for line in data["ca.key"].splitlines()[1:-1]:
        assert line not in written


def test_a_one_replica_tenant_gets_tls_a_kibana_token_and_readiness(cluster, data_dir):
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("sec_user", "svc", "es-sec"))
    assert proc.returncode == 0, output(proc)
    data = assert_security(cluster, "es-sec", replicas=1)
    assert_no_key_leaked(data, data_dir, proc)
    record = tenant_record(data_dir, "sec_user", "svc")
    assert record["resources"]["endpoints"]["elasticsearch"] == "https://elasticsearch.es-sec.svc:9200"
    assert record["resources"]["ca_configmap"] == "elasticsearch-ca"
    applied = [b for _u, b in reports(data_dir, "sec_user", "svc") if b["status"] == "k8s_applied"][0]
    objects = {(o["kind"], o["name"]): o for o in applied["details"]["objects"]}
    assert objects[("Secret", "elasticsearch-security")]["created"] is True
    assert objects[("ConfigMap", "elasticsearch-ca")]["created"] is True
    assert applied["details"]["config_refused"] == []


def test_a_three_replica_tenant_with_plain_http_and_no_privileged_pod_refuses_security_overrides(
        cluster, data_dir, gitlab_server):
    gitlab_server.projects[42].commit({"elasticsearch.yml": (
        "xpack.security.enabled: false\n"
        "xpack:\n  security:\n    http.ssl.enabled: true\n    transport.ssl.verification_mode: none\n"
        "discovery.seed_hosts: [elsewhere]\ncluster.initial_master_nodes: [x]\nreadiness.port: 9999\n"
        "indices.query.bool.max_clause_count: 4096\ncluster.name: theirs\n")}, message="loosen security")
    vars_ = tenant_vars("sec3_user", "svc", "es-sec3", es_replicas=3, es_http_tls=False,
                        es_max_map_count_init=False, es_gitlab_url=gitlab_server.url,
                        es_gitlab_project="tenants/es-config", es_gitlab_token=gitlab_server.token,
                        es_gitlab_files=["elasticsearch.yml"])
    proc = run_playbook(cluster.kubeconfig, data_dir, vars_)
    assert proc.returncode == 0, output(proc)
    data = assert_security(cluster, "es-sec3", replicas=3, http_tls=False, mmap_init=False)
    assert_no_key_leaked(data, data_dir, proc)
    _cm, es = settings(cluster, "es-sec3")
    assert es["indices.query.bool.max_clause_count"] == 4096  # what is the tenant's stays theirs
    applied = [b for _u, b in reports(data_dir, "sec3_user", "svc") if b["status"] == "k8s_applied"][0]
    assert applied["details"]["config_refused"] == [
        "cluster.initial_master_nodes", "discovery.seed_hosts", "readiness.port",
        "xpack.security.enabled", "xpack.security.http.ssl.enabled", "xpack.security.transport.ssl.verification_mode"]
    assert applied["details"]["config_overridden"] == ["cluster.name"]
    record = tenant_record(data_dir, "sec3_user", "svc")
    assert record["resources"]["endpoints"]["elasticsearch"] == "http://elasticsearch.es-sec3.svc:9200"


def test_bootstrap_setting_goes_once_the_cluster_formed_without_rolling_a_pod(cluster, data_dir):
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("boot_user", "svc", "es-boot", es_replicas=3))
    assert proc.returncode == 0, output(proc)
    got = {b["status"]: b for _u, b in reports(data_dir, "boot_user", "svc")}
    # stage 4 wrote it (the nodes started with it); stage 8 removed it once every node was ready
    assert got["rollout_completed"]["details"]["bootstrap_removed"] == ["cluster.initial_master_nodes"]
    assert_security(cluster, "es-boot", replicas=3)
    sts = cluster.apps.read_namespaced_stateful_set("elasticsearch", "es-boot")
    assert sts.metadata.generation == 1  # the pod template never changed: no pod rolled for it


def test_the_secret_is_created_once_and_its_ca_kept(cluster, tmp_path):
    cluster.core.create_namespace({"metadata": {"name": "es-certs-once"}})
    args = {"namespace": "es-certs-once", "name": "elasticsearch-security", "kubeconfig": cluster.kubeconfig}
    proc, first = ansible_module.run_module(tmp_path, "es_certs", args)
    assert first.get("failed") is not True, proc.stdout + proc.stderr
    assert first["changed"] is True and [o["created"] for o in first["created"]] == [True]
    stored = secret_data(cluster, "es-certs-once")
    assert first["ca_crt"] == stored["ca.crt"]
    # Again (the Secret exists: 409), and again reading first: the same CA and nothing new.
    for read_first in (False, True):
        proc, again = ansible_module.run_module(tmp_path, "es_certs", dict(args, read_first=read_first))
        assert again.get("failed") is not True, proc.stdout + proc.stderr
        assert (again["changed"], again["created"], again["ca_crt"]) == (False, [], stored["ca.crt"])
        assert [o["created"] for o in again["objects"]] == [False]
        assert secret_data(cluster, "es-certs-once") == stored
        assert "PRIVATE KEY" not in proc.stdout + proc.stderr
    # A Secret of that name that lacks the material is not silently used.
    cluster.core.create_namespaced_secret("es-certs-once", {"metadata": {"name": "half"},
                                                            "stringData": {"ca.crt": "x"}})
    proc, half = ansible_module.run_module(tmp_path, "es_certs", dict(args, name="half"))
    assert half["failed"] is True and "Secret/half in namespace es-certs-once exists without ca.key" in half["msg"]
