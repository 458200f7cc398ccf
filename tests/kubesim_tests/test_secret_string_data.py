import base64
from kubernetes import client, config
from tests.kubesim.fixture import KubeSim


def test_secret_string_data_is_merged_into_data():
    with KubeSim() as sim:
        core = client.CoreV1Api(config.new_client_from_config(config_file=sim.kubeconfig))
        body = {"metadata": {"name": "s"}, "stringData": {"p": "hunter2"}, "data": {"q": "eA=="}}
        core.create_namespaced_secret("default", body)
        got = core.read_namespaced_secret("s", "default")
        assert got.string_data is None and got.type == "Opaque"
        assert base64.b64decode(got.data["p"]) == b"hunter2" and got.data["q"] == "eA=="
