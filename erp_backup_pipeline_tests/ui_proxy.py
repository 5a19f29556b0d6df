"""The operators' UI as deployed: a read-only ``dagster-webserver`` behind nginx with TLS and basic auth.

``deploy/nginx/erp-backup-ui.conf`` is used as shipped; only what ties it to a host is rewritten (the listen
address becomes a free loopback port, the TLS and htpasswd directory a temp dir, the upstream the read-only
webserver's port). A self-signed certificate and an htpasswd (``openssl passwd -apr1``) are made here. nginx runs
in the foreground of its own session and is stopped by PID.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from erp_backup_pipeline_devkit.servers import free_port, stop_process
from erp_backup_pipeline_tests.topology import BIN, PRODUCTION, ROOT, Topology, port_open

SHIPPED = ROOT / "deploy" / "nginx" / "erp-backup-ui.conf"


@dataclass
class Proxy:
    port: int
    proc: subprocess.Popen[bytes]
    base: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def request(self, path: str, body: dict[str, Any] | None = None, auth: tuple[str, str] | None = None
                ) -> tuple[int, bytes]:
        """(status, body) of a request through the proxy; the certificate is self-signed, so not verified."""
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30, context=ssl._create_unverified_context()) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> None:
        stop_process(self.proc)


def _site_conf(tls: Path, port: int, upstream: int) -> str:
    text = SHIPPED.read_text()
    for old, new in (("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"), ("listen [::]:443 ssl;", ""),
                     ("/etc/erp-backup/tls/", f"{tls}/"), ("http://127.0.0.1:3001;", f"http://127.0.0.1:{upstream};")):
        assert old in text, f"{SHIPPED} no longer holds {old!r}"
        text = text.replace(old, new)
    return text


def start_proxy(base: Path, upstream: int, users: dict[str, str]) -> Proxy:
    tls = base / "tls"
    tls.mkdir(parents=True, mode=0o700)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(tls / "ui.key"), "-out", str(tls / "ui.crt")], check=True, capture_output=True)
    lines = [f"{user}:" + subprocess.run(["openssl", "passwd", "-apr1", "-stdin"], input=password, text=True,
                                         check=True, capture_output=True).stdout.strip()
             for user, password in users.items()]
    (tls / "htpasswd").write_text("\n".join(lines) + "\n")
    port = free_port()
    (base / "site.conf").write_text(_site_conf(tls, port, upstream))
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (base / d).mkdir()
    (base / "nginx.conf").write_text(f"""user root;  # the test's files are root's; production runs its workers as www-data
daemon off;
pid {base}/nginx.pid;
error_log {base}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {base}/access.log;
    client_body_temp_path {base}/body; proxy_temp_path {base}/proxy; fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi; scgi_temp_path {base}/scgi;
    include {base}/site.conf;
}}
""")
    check = subprocess.run(["nginx", "-t", "-c", str(base / "nginx.conf"), "-p", str(base)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with open(base / "nginx.out", "ab") as out:
        proc = subprocess.Popen(["nginx", "-c", str(base / "nginx.conf"), "-p", str(base)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return Proxy(port, proc, base)


def start_read_only_webserver(topo: Topology) -> tuple[subprocess.Popen[bytes], int]:
    """``dagster-webserver --read-only`` on a free loopback port, on the topology's instance and code server."""
    port = free_port()
    topo.start("webserver-readonly", [str(BIN / "dagster-webserver"), "--read-only", "-w",
                                      str(PRODUCTION / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)])
    proc = topo.procs["webserver-readonly"]
    topo.wait("read-only webserver", lambda: port_open(port) and urllib.request.urlopen(
        f"http://127.0.0.1:{port}/server_info", timeout=2).status == 200, 90)
    return proc, port
