"""docker-py (the Docker SDK for Python) against berthd.

Run by scripts/test.sh with `python3 -m pytest tests/python` (or `python3 -m unittest` from
tests/python). Needs root, a built berthd/berth (target/debug or $BERTH_BIN_DIR) and the
`docker` Python package.
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import berth_harness  # noqa: E402

try:
    import docker
except ImportError:  # pragma: no cover - reported as a skip
    docker = None


@unittest.skipIf(docker is None, "the docker Python package is not installed")
@unittest.skipIf(os.geteuid() != 0, "berth end-to-end tests need root")
class DockerPyTest(unittest.TestCase):
    daemon = None
    client = None

    @classmethod
    def setUpClass(cls):
        cls.daemon = berth_harness.BerthDaemon()
        try:
            cls.daemon.start()
            cls.daemon.import_busybox()
            cls.client = docker.DockerClient(base_url=cls.daemon.host, timeout=60)
        except BaseException:
            print(cls.daemon.log_tail())
            cls.daemon.close()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.client is not None:
            cls.client.close()
        if cls.daemon is not None:
            cls.daemon.close()

    def tearDown(self):
        for c in self.client.containers.list(all=True):
            c.remove(force=True)

    def test_version_and_ping(self):
        self.assertTrue(self.client.ping())
        version = self.client.version()
        self.assertIn("ApiVersion", version)
        self.assertEqual(version.get("Os"), "linux")
        info = self.client.info()
        self.assertIn("Containers", info)

    def test_images_list_has_busybox(self):
        tags = [t for image in self.client.images.list() for t in image.tags]
        self.assertIn("busybox:latest", tags)
        image = self.client.images.get("busybox")
        self.assertTrue(image.id.startswith("sha256:"))
        with self.assertRaises(docker.errors.ImageNotFound):
            self.client.images.get("nosuchimage-py:1")

    def test_run_remove_returns_output(self):
        out = self.client.containers.run("busybox", "echo hi", remove=True)
        self.assertEqual(out, b"hi\n")
        self.assertEqual(self.client.containers.list(all=True), [])

    def test_run_nonzero_exit_raises_container_error(self):
        with self.assertRaises(docker.errors.ContainerError) as ctx:
            self.client.containers.run("busybox", ["sh", "-c", "echo bad >&2; exit 3"], remove=True)
        self.assertEqual(ctx.exception.exit_status, 3)

    def test_detached_container_lifecycle(self):
        c = self.client.containers.run("busybox", ["sh", "-c", "echo ready; sleep 1000"], detach=True, name="pyweb")
        c.reload()
        self.assertEqual(c.status, "running")
        self.assertEqual(c.name, "pyweb")
        self.assertIn(c.id, [x.id for x in self.client.containers.list()])
        self.assertIn(c.id, [x.id for x in self.client.containers.list(filters={"name": "pyweb"})])
        deadline = time.monotonic() + 10
        while b"ready" not in c.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(c.logs(), b"ready\n")
        c.stop(timeout=1)
        c.reload()
        self.assertEqual(c.status, "exited")
        self.assertIn(c.attrs["State"]["ExitCode"], (137, 143))
        self.assertNotIn(c.id, [x.id for x in self.client.containers.list()])
        c.remove()
        self.assertNotIn(c.id, [x.id for x in self.client.containers.list(all=True)])

    def test_wait_returns_status_code(self):
        c = self.client.containers.run("busybox", ["sh", "-c", "exit 4"], detach=True)
        self.assertEqual(c.wait(timeout=30)["StatusCode"], 4)

    def test_build_from_a_directory_and_a_fileobj(self):
        import io
        import tempfile

        with tempfile.TemporaryDirectory() as ctx:
            with open(os.path.join(ctx, "Dockerfile"), "w") as f:
                f.write("FROM busybox\nARG WHO\nCOPY msg.txt /msg.txt\n"
                        "RUN echo \"for $WHO\" >> /msg.txt\nCMD [\"cat\", \"/msg.txt\"]\n")
            with open(os.path.join(ctx, "msg.txt"), "w") as f:
                f.write("built\n")
            image, logs = self.client.images.build(
                path=ctx, tag="pybuilt:1", buildargs={"WHO": "docker-py"}, rm=True)
        # docker-py finds the ID in the "Successfully built" line or the aux message.
        self.assertTrue(image.id.startswith("sha256:"))
        self.assertIn("pybuilt:1", image.tags)
        text = "".join(chunk.get("stream", "") for chunk in logs)
        self.assertIn("Step 1/5 : FROM busybox", text)
        out = self.client.containers.run("pybuilt:1", remove=True)
        self.assertEqual(out, b"built\nfor docker-py\n")

        dockerfile = io.BytesIO(b"FROM busybox\nRUN exit 7\n")
        with self.assertRaises(docker.errors.BuildError) as failed:
            self.client.images.build(fileobj=dockerfile, tag="pybroken:1")
        self.assertIn("non-zero code: 7", str(failed.exception))
        self.client.images.remove("pybuilt:1")


if __name__ == "__main__":
    unittest.main()
