"""A real PgBouncer (Debian's package) in transaction mode in front of the test PostgreSQL, the way
managed PostgreSQL offerings front theirs: each transaction gets whichever server connection is
free, so nothing a client prepares outlives its transaction."""
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse

from conftest import free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


class PgBouncer:
    def __init__(self, server_url: str, pool_size: int = 20):
        assert os.path.exists(PGBOUNCER), "pgbouncer is not installed: run scripts/test.sh, which installs it"
        server = urllib.parse.urlsplit(server_url)
        self.server_netloc = server.netloc
        self.dir = tempfile.mkdtemp(prefix="lmsvr-pgbouncer-")
        self.port = free_port()
        with open(os.path.join(self.dir, "users.txt"), "w") as f:
            f.write(f'"{server.username}" ""\n')
        with open(os.path.join(self.dir, "pgbouncer.ini"), "w") as f:
            f.write(f"""[databases]
* = host={server.hostname} port={server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/users.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 1000
server_reset_query =
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
""")
        # PgBouncer refuses to run as root.
        as_user = []
        if os.getuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            for name in os.listdir(self.dir):
                shutil.chown(os.path.join(self.dir, name), "postgres", "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        self.process = subprocess.Popen(as_user + [PGBOUNCER, os.path.join(self.dir, "pgbouncer.ini")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 15
        while subprocess.run(["psql", self.url_for(server_url), "-qAtc", "SELECT 1"], capture_output=True).returncode != 0:
            assert self.process.poll() is None, f"pgbouncer exited: {self.log()}"
            assert time.time() < deadline, f"pgbouncer did not accept connections: {self.log()}"
            time.sleep(0.1)

    def url_for(self, direct_url: str) -> str:
        """The same database and user, through the pooler."""
        parts = urllib.parse.urlsplit(direct_url)
        user = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
        netloc = (user + "@" if user else "") + f"127.0.0.1:{self.port}"
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "pgbouncer.log")) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
