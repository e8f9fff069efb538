//! Two hosts on loopback as Crunchy PGO deploys them: a database host (the postgres OS user and
//! its PGDATA) and a repository host (another OS user that cannot read PGDATA, with the
//! repository only on its side and a `server` on its own loopback address), configured with the
//! shapes of PGO's files (`pgbackrest_instance.conf`, `pgbackrest_repo.conf`,
//! `pgbackrest-server.conf`; paths and ports adapted), talking over mutual TLS with certificates
//! from a test CA made by `openssl`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::*;
use support::{chown_postgres, free_port, snapshot};

const REPO_HOST: &str = "127.0.0.2";
const DB_HOST: &str = "127.0.0.3";
/// A streaming standby's host (backup-standby through pgN-host).
const SB_HOST: &str = "127.0.0.5";
const CLIENT_CN: &str = "pgbackrest@cluster-uid";

fn openssl(args: &[&str]) {
    let o = Command::new("openssl").args(args).output().expect("run openssl");
    assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
}

/// A certificate authority in a directory, issuing EC P-256 certificates.
struct Ca {
    dir: PathBuf,
    crt: PathBuf,
    key: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Self {
        let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        let subject = format!("/O=pgstrata tests/CN={name}");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            crt.to_str().unwrap(),
        ]);
        Self { dir: dir.to_path_buf(), crt, key }
    }

    /// A certificate for `cn` (`alt`: its subjectAltName, for a server), as `<stem>.crt/.key`.
    fn issue(&self, stem: &str, cn: &str, alt: Option<&str>) -> (PathBuf, PathBuf) {
        let (crt, key, csr, ext) = (
            self.dir.join(format!("{stem}.crt")),
            self.dir.join(format!("{stem}.key")),
            self.dir.join(format!("{stem}.csr")),
            self.dir.join(format!("{stem}.ext")),
        );
        let mut extensions = String::from("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n");
        if let Some(alt) = alt {
            extensions.push_str(&format!("subjectAltName={alt}\n"));
        }
        std::fs::write(&ext, extensions).unwrap();
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/O=pgstrata tests/CN={cn}"),
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            self.crt.to_str().unwrap(),
            "-CAkey",
            self.key.to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            crt.to_str().unwrap(),
        ]);
        (crt, key)
    }
}

/// The two hosts' OS users when the tests run as root (else both are the current user).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Host {
    /// `postgres`, owner of PGDATA.
    Database,
    /// `nobody`, who cannot read PGDATA.
    Repository,
}

/// `program args` as `host`'s user with exactly `env` (exec'd, so the pid is the program's).
fn as_host(host: Host, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    match host {
        Host::Database => support::command_as("postgres", "postgres", program, args, env),
        Host::Repository => support::command_as("nobody", "nogroup", program, args, env),
    }
}

fn as_repo_host(program: &Path, args: &[&str]) -> Command {
    as_host(Host::Repository, program, args, &[])
}

fn chown_repo_host(p: &Path) {
    if support::is_root() {
        let ok = Command::new("chown").args(["-R", "nobody:nogroup"]).arg(p).status().unwrap().success();
        assert!(ok, "chown {}", p.display());
    }
}

/// A running `pgbackrest server`, killed when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(host: Host, link: &Path, etc: &Path, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let config = format!("--config-path={}", etc.display());
        let child = as_host(host, link, &[&config, "server"], &[])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let server = Self { child, log };
        let began = Instant::now();
        loop {
            let o = as_host(host, link, &[&config, "server-ping"], &[]).output().unwrap();
            if o.status.success() {
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "server-ping never succeeded: {}\n{}",
                text(&o),
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn hangup(&self) {
        let ok = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill -HUP");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The subject of the certificate a TLS server presents now (openssl s_client, a new connection).
fn presented_subject(at: &str, ca: &Path) -> String {
    let script = format!(
        "openssl s_client -connect {at} -CAfile {} </dev/null 2>/dev/null | openssl x509 -noout -subject",
        ca.display()
    );
    let o = Command::new("sh").args(["-c", &script]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A raw request with curl (HTTP/2, our CA): the status and body a client without our code gets.
fn curl(url: &str, ca: &Path, cert: Option<(&Path, &Path)>, head: &str) -> (String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--http2", "-X", "POST", "-w", "\n%{http_code}", "--cacert"]).arg(ca);
    if let Some((crt, key)) = cert {
        cmd.arg("--cert").arg(crt).arg("--key").arg(key);
    }
    cmd.arg("-H").arg(format!("pgstrata-request: {head}")).arg(url);
    let o = cmd.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, status) = out.rsplit_once('\n').unwrap_or((&out, ""));
    (status.to_string(), body.to_string())
}

fn pgbench(cluster: &Cluster, args: &[&str]) {
    let mut all = args.to_vec();
    all.push("postgres");
    let o = cluster.tool("pgbench", &all);
    assert!(o.status.success(), "pgbench {args:?}: {}", text(&o));
}

#[test]
fn backups_through_pg1_host_and_archive_and_restore_through_repo1_host() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-hosts-db-");
    // The repository host's own directory: its user only (the database host cannot read it).
    let rh_dir = tempfile::Builder::new().prefix("pgstrata-hosts-repo-").tempdir().unwrap();
    let rh = rh_dir.path();
    for d in ["etc/conf.d/~postgres-operator", "server", "repo1", "log", "lock"] {
        std::fs::create_dir_all(rh.join(d)).unwrap();
    }
    let bindir = scratch.path("bin");
    let link = bindir.join("pgbackrest");
    std::os::unix::fs::symlink(support::bin(), &link).unwrap();
    std::fs::set_permissions(scratch.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // Certificates: the cluster's CA, each host's server certificate, PGO's client certificate
    // (both hosts use it), and the refused ones.
    let pki = scratch.path("pki");
    let ca = Ca::new(&pki, "cluster-ca");
    let (repo_crt, repo_key) = ca.issue("repo-server", "repo-host-0", Some(&format!("IP:{REPO_HOST},DNS:localhost")));
    let (db_crt, db_key) = ca.issue("db-server", "db-host-0", Some(&format!("IP:{DB_HOST},DNS:localhost")));
    let (client_crt, client_key) = ca.issue("client-tls", CLIENT_CN, None);
    let (intruder_crt, intruder_key) = ca.issue("intruder", "intruder", None);
    let (reader_crt, reader_key) = ca.issue("reader", "reader@cluster-uid", None);
    let other_ca = Ca::new(&pki, "other-ca");
    let (forged_crt, forged_key) = other_ca.issue("forged", CLIENT_CN, None);
    let client_files = [(&ca.crt, "tls-ca.crt"), (&client_crt, "client-tls.crt"), (&client_key, "client-tls.key")];
    let rh_operator = rh.join("etc/conf.d/~postgres-operator");
    for (from, to) in client_files {
        std::fs::copy(from, rh_operator.join(to)).unwrap();
    }
    std::fs::copy(&repo_crt, rh.join("server/server-tls.crt")).unwrap();
    std::fs::copy(&repo_key, rh.join("server/server-tls.key")).unwrap();
    let etc = scratch.path("etc");
    let conf_d = scratch.path("etc/conf.d");
    let db_operator = scratch.path("etc/conf.d/~postgres-operator");
    for (from, to) in client_files {
        std::fs::copy(from, db_operator.join(to)).unwrap();
    }
    let db_server_dir = scratch.path("server");
    std::fs::copy(&db_crt, db_server_dir.join("server-tls.crt")).unwrap();
    std::fs::copy(&db_key, db_server_dir.join("server-tls.key")).unwrap();

    let primary = Cluster::init(&scratch, "primary");
    let (repo_port, db_port) = (free_port(), free_port());
    let pass_line = format!("repo1-cipher-type=aes-256-gcm\nrepo1-cipher-pass={PASS}\n");
    // pgbackrest-server.conf, the same on both hosts but for the address (and, here, port).
    let server_conf = |address: &str, port: u16, operator: &Path, server: &Path| {
        format!(
            "[global]\ntls-server-address={address}\ntls-server-auth={CLIENT_CN}=*\ntls-server-auth=reader@cluster-uid=other\n\
             tls-server-ca-file={od}/tls-ca.crt\ntls-server-cert-file={sd}/server-tls.crt\n\
             tls-server-key-file={sd}/server-tls.key\ntls-server-port={port}\n\n\
             [global:server]\nlog-level-console=detail\nlog-level-stderr=error\nlog-level-file=off\nlog-timestamp=n\n",
            od = operator.display(),
            sd = server.display(),
        )
    };
    let db_section = format!(
        "[db]\npg1-path={}\npg1-port={}\npg1-socket-path={}\n",
        primary.data.display(),
        primary.port,
        primary.socket.display()
    );
    // pgbackrest_repo.conf on the repository host: every instance as pgN-host, as PGO lists
    // them; pg1's host does not answer (an instance down), pg2 is the database host.
    let instance = |n: u32, host: &str| {
        format!(
            "pg{n}-host={host}\npg{n}-host-ca-file={od}/tls-ca.crt\npg{n}-host-cert-file={od}/client-tls.crt\n\
             pg{n}-host-key-file={od}/client-tls.key\npg{n}-host-type=tls\npg{n}-host-port={db_port}\n\
             pg{n}-path={data}\npg{n}-port={port}\npg{n}-socket-path={socket}\n",
            od = rh_operator.display(),
            data = primary.data.display(),
            port = primary.port,
            socket = primary.socket.display(),
        )
    };
    std::fs::write(
        rh.join("etc/conf.d/pgbackrest_repo.conf"),
        format!(
            "[global]\nlog-path={rh}/log\nrepo1-path={rh}/repo1\n{pass_line}lock-path={rh}/lock\nprocess-max=2\n\n\
             [db]\n{}{}",
            instance(1, "127.0.0.4"),
            instance(2, DB_HOST),
            rh = rh.display(),
        ),
    )
    .unwrap();
    std::fs::write(
        rh.join("etc/conf.d/pgbackrest-server.conf"),
        server_conf(REPO_HOST, repo_port, &rh_operator, &rh.join("server")),
    )
    .unwrap();
    chown_repo_host(rh);
    std::fs::set_permissions(rh, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(rh.join("repo1"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // pgbackrest_instance.conf and pgbackrest-server.conf on the database host.
    std::fs::write(
        conf_d.join("pgbackrest_instance.conf"),
        format!(
            "[global]\narchive-async=y\nlog-path={log}\nrepo1-host={REPO_HOST}\nrepo1-host-ca-file={od}/tls-ca.crt\n\
             repo1-host-cert-file={od}/client-tls.crt\nrepo1-host-key-file={od}/client-tls.key\nrepo1-host-type=tls\n\
             repo1-host-user=postgres\nrepo1-host-port={repo_port}\nrepo1-path={rh}/repo1\n{pass_line}spool-path={spool}\n\
             lock-path={lock}\n\n{db_section}",
            log = scratch.path("log").display(),
            od = db_operator.display(),
            rh = rh.display(),
            spool = scratch.path("spool").display(),
            lock = scratch.path("lock").display(),
        ),
    )
    .unwrap();
    std::fs::write(conf_d.join("pgbackrest-server.conf"), server_conf(DB_HOST, db_port, &db_operator, &db_server_dir))
        .unwrap();
    chown_postgres(&etc);
    chown_postgres(&pki);
    chown_postgres(&db_server_dir);

    let repo_server = Server::start(Host::Repository, &link, &rh.join("etc"), rh.join("log/server.out"));
    let db_server = Server::start(Host::Database, &link, &etc, scratch.dir.path().join("server.out"));
    let logs = || format!("repository host server:\n{}\ndatabase host server:\n{}", repo_server.log(), db_server.log());
    let path_env = format!("{}:/usr/bin:/bin", bindir.display());
    let env = [("PATH", path_env.as_str()), ("PGBACKREST_CONFIG_PATH", etc.to_str().unwrap())];
    let db_host = |args: &[&str]| {
        run_as_postgres(Path::new("/bin/sh"), &[&["-c", "exec pgbackrest \"$@\"", "pgbackrest"], args].concat(), &env)
    };
    let db_ok = |args: &[&str]| {
        let o = db_host(args);
        assert!(o.status.success(), "pgbackrest {args:?} on the database host: {}\n{}", text(&o), logs());
        o
    };
    let repo_host_config = format!("--config-path={}", rh.join("etc").display());
    let repo_host = |args: &[&str]| -> Output {
        let all: Vec<&str> = [&[repo_host_config.as_str()], args].concat();
        as_repo_host(&link, &all).output().unwrap()
    };
    let repo_ok = |args: &[&str]| {
        let o = repo_host(args);
        assert!(o.status.success(), "pgbackrest {args:?} on the repository host: {}\n{}", text(&o), logs());
        o
    };

    // Each side sees only its own: PGDATA is not the repository host's, the repository not the
    // database host's.
    if support::is_root() {
        let o = as_repo_host(Path::new("/bin/ls"), &[primary.data.to_str().unwrap()]).output().unwrap();
        assert!(!o.status.success(), "the repository host can read PGDATA: {}", text(&o));
        let o = run_as_postgres(Path::new("/bin/ls"), &[rh.join("repo1").to_str().unwrap()], &[]);
        assert!(!o.status.success(), "the database host can read the repository: {}", text(&o));
    }

    primary.configure(
        "archive_mode = on\narchive_command = 'pgbackrest --stanza=db archive-push \"%p\"'\nwal_level = replica\n",
    );
    primary.start_with_env(&env);
    // PGO's stanza creation, run on the database host through the repository host.
    db_ok(&["--stanza=db", "stanza-create"]);
    assert!(rh.join("repo1/stanza/db/stanza.info").is_file(), "no stanza on the repository host");
    // Backups as PGO's Jobs take them: on the repository host, the cluster through pg1-host.
    pgbench(&primary, &["-i", "-s", "10", "-q"]);
    let o = repo_ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pg1: unable to reach PostgreSQL through the server at 127.0.0.4"),
        "{}",
        text(&o)
    );
    pgbench(&primary, &["-T", "3", "-c", "2", "-n"]);
    repo_ok(&["--stanza=db", "backup", "--type=diff", "--start-fast"]);
    pgbench(&primary, &["-T", "3", "-c", "2", "-n"]);
    let at_incr = primary.dumpall();
    repo_ok(&["--stanza=db", "backup", "--type=incr", "--start-fast"]);
    let target = primary.sql("select clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    primary.sql("create table after_target as select g from generate_series(1, 1000) g");
    primary.archive_now();
    // check from both sides.
    repo_ok(&["--stanza=db", "check"]);
    db_ok(&["--stanza=db", "check"]);

    // info on both sides: the same three backups.
    let o = db_ok(&["--stanza=db", "info", "--output=json"]);
    let db_side: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let o = repo_ok(&["--stanza=db", "info", "--output=json"]);
    let repo_side: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let labels = |v: &serde_json::Value| -> Vec<String> {
        v[0]["backup"].as_array().unwrap().iter().map(|b| b["label"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(labels(&db_side).len(), 3, "{db_side}");
    assert_eq!(labels(&db_side), labels(&repo_side));
    assert_eq!(db_side[0]["status"]["code"], 0, "{db_side}");

    // Point-in-time restore on the database host, through the repository host.
    let pitr_dir = scratch.path("pitr");
    db_ok(&[
        "--stanza=db",
        "restore",
        &format!("--pg1-path={}", pitr_dir.display()),
        "--type=time",
        &format!("--target={target}"),
        "--target-action=promote",
    ]);
    let pitr = Cluster::existing(&scratch, pitr_dir, "pitr");
    pitr.configure("archive_mode = off");
    pitr.start_with_env(&env);
    pitr.wait_promoted();
    assert_eq!(pitr.dumpall(), at_incr, "the point-in-time restore differs from the source at the target");
    pitr.stop();

    // A standby built the same way follows the archive through the repository host.
    let standby_dir = scratch.path("standby");
    db_ok(&["--stanza=db", "restore", &format!("--pg1-path={}", standby_dir.display()), "--type=standby"]);
    let standby = Cluster::existing(&scratch, standby_dir, "standby");
    standby.configure("archive_mode = off\nhot_standby = on\n");
    standby.start_with_env(&env);
    primary.sql("create table after_standby as select g from generate_series(1, 4321) g");
    primary.archive_now();
    standby.wait_for(
        "select count(*) from after_standby",
        "4321",
        "the standby did not replay through the repository host",
    );
    assert_eq!(standby.dumpall(), primary.dumpall(), "the standby differs from the primary");
    standby.stop();

    // A backup from a streaming standby on a third host (its own server), as PGO runs replicas
    // in other pods: listed as pg3-host on the repository host; its replicated files are read
    // (and compressed) by the standby host's server.
    let sb_dir = scratch.dir.path().join("streaming");
    let o = primary.tool("pg_basebackup", &["-D", sb_dir.to_str().unwrap(), "-R", "-X", "stream", "-c", "fast"]);
    assert!(o.status.success(), "pg_basebackup: {}", text(&o));
    let sb = Cluster::existing(&scratch, sb_dir, "streaming");
    sb.configure("archive_mode = off\nhot_standby = on\n");
    sb.start_with_env(&env);
    sb.wait_for("select pg_is_in_recovery()", "t", "the streaming standby did not start in recovery");
    let sb_etc = scratch.path("sb-etc");
    let sb_server_dir = scratch.path("sb-server");
    let (sb_crt, sb_key) = ca.issue("sb-server", "db-host-1", Some(&format!("IP:{SB_HOST},DNS:localhost")));
    std::fs::copy(&sb_crt, sb_server_dir.join("server-tls.crt")).unwrap();
    std::fs::copy(&sb_key, sb_server_dir.join("server-tls.key")).unwrap();
    let sb_port = free_port();
    std::fs::write(
        sb_etc.join("pgbackrest.conf"),
        format!(
            "{}\n[db]\npg1-path={}\npg1-port={}\npg1-socket-path={}\n",
            server_conf(SB_HOST, sb_port, &db_operator, &sb_server_dir),
            sb.data.display(),
            sb.port,
            sb.socket.display()
        ),
    )
    .unwrap();
    chown_postgres(&sb_etc);
    chown_postgres(&sb_server_dir);
    let sb_server = Server::start(Host::Database, &link, &sb_etc, scratch.dir.path().join("sb-server.out"));
    let repo_conf = rh.join("etc/conf.d/pgbackrest_repo.conf");
    let mut conf = std::fs::read_to_string(&repo_conf).unwrap();
    conf.push_str(&format!(
        "pg3-host={SB_HOST}\npg3-host-ca-file={od}/tls-ca.crt\npg3-host-cert-file={od}/client-tls.crt\n\
         pg3-host-key-file={od}/client-tls.key\npg3-host-type=tls\npg3-host-port={sb_port}\npg3-path={}\n\
         pg3-port={}\npg3-socket-path={}\n",
        sb.data.display(),
        sb.port,
        sb.socket.display(),
        od = rh_operator.display(),
    ));
    std::fs::write(&repo_conf, conf).unwrap();
    chown_repo_host(&repo_conf);
    let at_standby_backup = primary.dumpall();
    let o = repo_ok(&["--stanza=db", "backup", "--type=full", "--backup-standby=y", "--log-level-console=info"]);
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    let read = super::standby::reads(&said);
    let read_on = |role: &str| read.iter().find(|(_, r)| r == role).map_or(0, |(n, _)| *n);
    assert!(said.contains(&format!("from the standby {SB_HOST}:")), "{said}\n{}", sb_server.log());
    assert!(read_on("standby") > 10 * read_on("primary"), "{said}");
    let sb_label = said
        .lines()
        .find_map(|l| l.split("new backup label = ").nth(1))
        .map(|l| l.trim().to_string())
        .expect("a new backup label");
    drop(sb_server);
    sb.stop();
    let from_sb = scratch.path("from-standby");
    db_ok(&[
        "--stanza=db",
        "restore",
        &format!("--pg1-path={}", from_sb.display()),
        &format!("--set={sb_label}"),
        "--type=immediate",
        "--target-action=promote",
    ]);
    let c = Cluster::existing(&scratch, from_sb, "from-standby");
    c.configure("archive_mode = off");
    c.start_with_env(&env);
    c.wait_promoted();
    assert_eq!(c.dumpall(), at_standby_backup, "the backup from the standby through pg3-host differs");
    c.stop();

    // Refusals: each a clear error, nothing served and nothing changed.
    let before = snapshot(&rh.join("repo1"));
    let with_cert = |crt: &Path, key: &Path| {
        db_host(&[
            "--stanza=db",
            "info",
            &format!("--repo1-host-cert-file={}", crt.display()),
            &format!("--repo1-host-key-file={}", key.display()),
        ])
    };
    let refused = |o: &Output, expected: &str| {
        assert_eq!(o.status.code(), Some(105), "{}", text(o));
        assert!(String::from_utf8_lossy(&o.stderr).contains(expected), "wanted {expected:?}: {}", text(o));
    };
    refused(&with_cert(&intruder_crt, &intruder_key), "CN 'intruder' is not granted stanza 'db'");
    refused(&with_cert(&reader_crt, &reader_key), "CN 'reader@cluster-uid' is not granted stanza 'db'");
    refused(&with_cert(&forged_crt, &forged_key), "this server does not trust the client certificate");
    let repo_url = format!("https://{REPO_HOST}:{repo_port}/repo");
    let get_info = r#"{"version":1,"stanza":"db","repo":1,"op":{"kind":"get","key":"stanza/db/stanza.info","range":null,"head":false}}"#;
    let (status, body) = curl(&repo_url, &ca.crt, None, get_info);
    assert_eq!(status, "401", "{body}");
    assert!(body.contains("no client certificate"), "{body}");
    let other = get_info.replace(r#""stanza":"db""#, r#""stanza":"other""#);
    let (status, body) = curl(&repo_url, &ca.crt, Some((&reader_crt, &reader_key)), &other);
    assert_eq!(status, "403", "a key of another stanza was served: {body}");
    let escape = get_info.replace("stanza/db/stanza.info", "stanza/db/../../../../etc/passwd");
    let (status, body) = curl(&repo_url, &ca.crt, Some((&client_crt, &client_key)), &escape);
    assert_eq!(status, "400", "{body}");
    assert!(body.contains("invalid key"), "{body}");
    // The granted client gets the object (so the refusals above were about the certificates).
    let (status, _) = curl(&repo_url, &ca.crt, Some((&client_crt, &client_key)), get_info);
    assert_eq!(status, "200");
    // An error names the key, never where the repository lies on the server's host.
    let missing = get_info.replace("stanza/db/stanza.info", "stanza/db/no-such-object");
    let (status, body) = curl(&repo_url, &ca.crt, Some((&client_crt, &client_key)), &missing);
    assert_eq!(status, "404", "{body}");
    assert!(body.contains("no-such-object") && !body.contains(&rh.display().to_string()), "{body}");
    assert_eq!(snapshot(&rh.join("repo1")), before, "a refused request changed the repository");
    // The database host's server serves PGDATA and its tablespaces only, to granted clients.
    let data_url = format!("https://{DB_HOST}:{db_port}/data");
    let read = |path: &str| {
        format!(
            r#"{{"version":1,"stanza":"db","repo":0,"op":{{"kind":"data-read","path":"{path}","offset":0,"len":100}}}}"#
        )
    };
    let version = read(&primary.data.join("PG_VERSION").display().to_string());
    let (status, body) = curl(&data_url, &ca.crt, Some((&client_crt, &client_key)), &version);
    assert_eq!((status.as_str(), body.trim()), ("200", "15"));
    let (status, body) = curl(&data_url, &ca.crt, None, &version);
    assert_eq!(status, "401", "{body}");
    let (status, body) = curl(&data_url, &ca.crt, Some((&intruder_crt, &intruder_key)), &version);
    assert_eq!(status, "403", "{body}");
    let (status, body) = curl(&data_url, &ca.crt, Some((&client_crt, &client_key)), &read("/etc/passwd"));
    assert_eq!(status, "403", "a file outside PGDATA was served: {body}");
    let sneaky = read(&format!("{}/../../etc/passwd", primary.data.display()));
    let (status, body) = curl(&data_url, &ca.crt, Some((&client_crt, &client_key)), &sneaky);
    assert_eq!(status, "400", "{body}");
    // A link planted in PGDATA is not followed (only pg_wal and tablespace links are).
    let planted = primary.data.join("escape");
    std::os::unix::fs::symlink("/etc", &planted).unwrap();
    let through = read(&planted.join("passwd").display().to_string());
    let (status, body) = curl(&data_url, &ca.crt, Some((&client_crt, &client_key)), &through);
    assert_eq!(status, "403", "a file through a planted link was served: {body}");
    assert!(body.contains("follows only pg_wal and tablespace links"), "{body}");
    std::fs::remove_file(&planted).unwrap();

    // Certificates replaced and SIGHUP sent to both servers while a backup runs through them:
    // new connections get the new certificates, the backup completes.
    pgbench(&primary, &["-T", "2", "-c", "2", "-n"]);
    let (repo_at, db_at) = (format!("{REPO_HOST}:{repo_port}"), format!("{DB_HOST}:{db_port}"));
    assert_eq!(presented_subject(&repo_at, &ca.crt), "subject=O = pgstrata tests, CN = repo-host-0");
    assert_eq!(presented_subject(&db_at, &ca.crt), "subject=O = pgstrata tests, CN = db-host-0");
    let backup = as_repo_host(&link, &[&repo_host_config, "--stanza=db", "backup", "--type=full", "--start-fast"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let backup_root = rh.join("repo1/stanza/db/backup");
    let began = Instant::now();
    let already = labels(&serde_json::from_slice(&db_ok(&["--stanza=db", "info", "--output=json"]).stdout).unwrap());
    while !std::fs::read_dir(&backup_root)
        .map(|rd| rd.flatten().any(|e| !already.contains(&e.file_name().to_string_lossy().to_string())))
        .unwrap_or(false)
    {
        assert!(began.elapsed() < Duration::from_secs(60), "the backup never started writing");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (crt, key) = ca.issue("repo-renewed", "repo-host-renewed", Some(&format!("IP:{REPO_HOST}")));
    std::fs::copy(&crt, rh.join("server/server-tls.crt")).unwrap();
    std::fs::copy(&key, rh.join("server/server-tls.key")).unwrap();
    let (crt, key) = ca.issue("db-renewed", "db-host-renewed", Some(&format!("IP:{DB_HOST}")));
    std::fs::copy(&crt, db_server_dir.join("server-tls.crt")).unwrap();
    std::fs::copy(&key, db_server_dir.join("server-tls.key")).unwrap();
    repo_server.hangup();
    db_server.hangup();
    let mut backup = backup;
    assert!(backup.try_wait().unwrap().is_none(), "the backup finished before the reload; make it longer");
    let began = Instant::now();
    while !(repo_server.log().contains("reloaded") && db_server.log().contains("reloaded")) {
        assert!(began.elapsed() < Duration::from_secs(30), "no reload logged:\n{}", logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(presented_subject(&repo_at, &ca.crt), "subject=O = pgstrata tests, CN = repo-host-renewed");
    assert_eq!(presented_subject(&db_at, &ca.crt), "subject=O = pgstrata tests, CN = db-host-renewed");
    let finished = backup.wait_with_output().unwrap();
    assert!(finished.status.success(), "the backup across the reload failed: {}\n{}", text(&finished), logs());
    let o = db_ok(&["--stanza=db", "info", "--output=json"]);
    let after: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(labels(&after).len(), 5, "{after}");
    db_ok(&["--stanza=db", "verify"]);
    // The backup taken across the reload restores to a cluster equal to the source.
    let source = primary.dumpall();
    let latest_dir = scratch.path("latest");
    db_ok(&[
        "--stanza=db",
        "restore",
        &format!("--pg1-path={}", latest_dir.display()),
        "--type=immediate",
        "--target-action=promote",
    ]);
    let latest = Cluster::existing(&scratch, latest_dir, "latest");
    latest.configure("archive_mode = off");
    latest.start_with_env(&env);
    latest.wait_promoted();
    assert_eq!(latest.dumpall(), source, "the backup taken through pg1-host differs from the source");
    latest.stop();

    // Pages are checked where the data is: a relation file with a damaged page on the database
    // host is named by a backup through pg1-host (the file is a stray one, so the cluster itself
    // stays sound).
    let rel = primary.sql("select pg_relation_filepath('pgbench_branches')");
    let stray_rel = format!("{}/999999", Path::new(&rel).parent().unwrap().display());
    let mut page = std::fs::read(primary.data.join(&rel)).unwrap()[..8192].to_vec();
    page[5000] ^= 0x5a;
    let stray = primary.data.join(&stray_rel);
    std::fs::write(&stray, &page).unwrap();
    support::chown_postgres(&stray);
    let o = repo_ok(&["--stanza=db", "backup", "--type=incr", "--start-fast"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("invalid page checksums") && err.contains(&stray_rel) && err.contains("[0]"), "{err}");
    std::fs::remove_file(&stray).unwrap();

    // Incrementals that read many files again and find them unchanged (their time changed,
    // not their bytes: a part with nothing to store), as an incr seconds after a full does.
    // Each such part's answer once carried an empty DATA frame; h2 ends a connection after 100
    // of them ("connection error"), which failed such incrementals intermittently. Three in a
    // row, every file of every database touched each time.
    for round in 0..3 {
        let touched = Command::new("find")
            .arg(primary.data.join("base"))
            .args(["-type", "f", "-exec", "touch", "{}", "+"])
            .status()
            .unwrap();
        assert!(touched.success());
        let o = repo_host(&["--stanza=db", "backup", "--type=incr", "--start-fast"]);
        assert!(o.status.success(), "incr {round} after touching every file: {}\n{}", text(&o), logs());
    }

    // The storage contract holds through the server, checked in-process as for every backend.
    let config = pgstrata::config::Config::load(
        &["pgbackrest".into(), format!("--config-path={}", etc.display()), "--stanza=db".into(), "repo-ls".into()],
        &[],
    )
    .unwrap();
    let store = pgstrata::request::repos::repo_target(&config, 1).store().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(pgstrata_storage::conformance::run_all(
        &store.scoped("stanza/db/conformance"),
        pgstrata_storage::conformance::Capabilities { atomic_create: true },
    ));
}

/// A client whose grant is removed (configuration edited, SIGHUP) is refused on the HTTP/2
/// connection it already has open, not only on new ones; and so is a client whose CA is no longer
/// trusted after a reload.
#[test]
fn a_revoked_client_is_refused_on_its_open_connection() {
    use pgstrata::remote::{client, wire};
    let scratch = Scratch::new("pgstrata-revoke-");
    std::fs::set_permissions(scratch.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bindir = scratch.path("bin");
    let link = bindir.join("pgbackrest");
    std::os::unix::fs::symlink(support::bin(), &link).unwrap();
    let pki = scratch.path("pki");
    let ca = Ca::new(&pki, "revoke-ca");
    let other_ca = Ca::new(&pki, "revoke-other-ca");
    let (server_crt, server_key) = ca.issue("server", "repo-host", Some(&format!("IP:{REPO_HOST},DNS:localhost")));
    let (client_crt, client_key) = ca.issue("client", "backup-job", None);
    let repo = scratch.path("repo");
    std::fs::create_dir_all(repo.join("stanza/db")).unwrap();
    std::fs::write(repo.join("stanza/db/probe"), "served").unwrap();
    let (etc, port) = (scratch.path("etc"), free_port());
    let conf = |grant: &str, ca_file: &Path| {
        format!(
            "[global]\nrepo1-path={}\ntls-server-address={REPO_HOST}\ntls-server-port={port}\ntls-server-auth={grant}\n\
             tls-server-ca-file={}\ntls-server-cert-file={}\ntls-server-key-file={}\n\
             log-level-console=detail\nlog-level-stderr=error\nlog-level-file=off\nlog-timestamp=n\n",
            repo.display(),
            ca_file.display(),
            server_crt.display(),
            server_key.display()
        )
    };
    let write_conf = |text: String| std::fs::write(etc.join("pgbackrest.conf"), text).unwrap();
    write_conf(conf("backup-job=db", &ca.crt));
    chown_repo_host(scratch.dir.path());
    let server = Server::start(Host::Repository, &link, &etc, scratch.dir.path().join("server.log"));
    let reloaded = |times: usize| {
        let began = Instant::now();
        while server.log().matches("reloaded").count() < times {
            assert!(began.elapsed() < Duration::from_secs(30), "no reload logged:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tls = pgstrata::remote::tls::client_config("repo1-host", &ca.crt, &client_crt, &client_key).unwrap();
    let endpoint = client::Endpoint { option: "repo1-host".into(), host: REPO_HOST.into(), port, tls };
    let connection = client::Connection::new(endpoint.clone());
    let head: wire::Head = serde_json::from_str(
        r#"{"version":1,"stanza":"db","repo":1,"op":{"kind":"get","key":"stanza/db/probe","range":null,"head":false}}"#,
    )
    .unwrap();
    let get = || {
        rt.block_on(async {
            let request = client::post(&endpoint, "/repo", &head, client::empty()).unwrap();
            match connection.send(request).await {
                Ok(r) => Ok(client::read_body(r.into_body(), 1 << 10).await.unwrap()),
                Err(client::Failure::Answered(e)) => Err(e.message),
                Err(other) => panic!("not an answer: {other}"),
            }
        })
    };
    assert_eq!(get().unwrap(), b"served");
    // The grant goes; the same connection is refused from the next request on.
    write_conf(conf("someone-else=db", &ca.crt));
    server.hangup();
    reloaded(1);
    let refused = get().unwrap_err();
    assert!(refused.contains("CN 'backup-job'") && refused.contains("not"), "{refused}");
    // Granted again, then the CA replaced: the client's certificate is no longer trusted.
    write_conf(conf("backup-job=db", &ca.crt));
    server.hangup();
    reloaded(2);
    assert_eq!(get().unwrap(), b"served");
    write_conf(conf("backup-job=db", &other_ca.crt));
    server.hangup();
    reloaded(3);
    let refused = get().unwrap_err();
    assert!(refused.contains("does not trust the client certificate"), "{refused}");
    // A connection without a certificate is not kept open: the server ends it (10 s) though
    // its client would hold it forever.
    let mut idle = std::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &format!("{REPO_HOST}:{port}"), "-CAfile"])
        .arg(&ca.crt)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let began = Instant::now();
    while idle.try_wait().unwrap().is_none() {
        assert!(began.elapsed() < Duration::from_secs(40), "an unauthenticated connection stayed open");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// PGO with a repository host: the repository a pgBackRest 2.59.1 wrote (aes-256-cbc, bundles,
/// block incremental) on the repository host's volume, served by pgstrata's `server` after the
/// switch. Through it, the database host's first `archive-push` takes the stanza over (made on
/// the repository host, as its user), `info` lists pgBackRest's backups, and a restore of the
/// pgBackRest incr on the database host replays to the end with the source's data.
#[test]
fn a_pgbackrest_repository_behind_the_repository_host_is_taken_over() {
    if !postgres_available() {
        return;
    }
    let Some(current) = super::migrate::pgbackrest_binary("CURRENT") else { return };
    let scratch = Scratch::new("pgstrata-hosts-takeover-");
    std::fs::set_permissions(scratch.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let rh_dir = tempfile::Builder::new().prefix("pgstrata-hosts-takeover-repo-").tempdir().unwrap();
    let rh = rh_dir.path();
    for d in ["etc", "server", "repo1", "log"] {
        std::fs::create_dir_all(rh.join(d)).unwrap();
    }
    chown_postgres(rh);
    let link = scratch.path("bin").join("pgbackrest");
    std::os::unix::fs::symlink(&current, &link).unwrap();
    let primary = Cluster::init(&scratch, "primary");
    let common = format!(
        "repo1-path={rh}/repo1\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=behind the repo host\n\
         log-path={log}\nlock-path={lock}\nlog-level-file=off\nstart-fast=y\n",
        rh = rh.display(),
        log = scratch.path("log").display(),
        lock = scratch.path("lock").display(),
    );
    let db_section = format!(
        "[db]\npg1-path={}\npg1-port={}\npg1-socket-path={}\n",
        primary.data.display(),
        primary.port,
        primary.socket.display()
    );
    let conf =
        scratch.write("pgbackrest.conf", &format!("[global]\n{common}repo1-bundle=y\nrepo1-block=y\n\n{db_section}"));
    let sum = "select count(*), md5(string_agg(v, ',' order by id)) from t";
    primary.configure(&format!(
        "archive_mode = on\narchive_command = '{} --config={} --stanza=db archive-push \"%p\"'\nwal_level = replica\n",
        link.display(),
        conf.display()
    ));
    primary.start();
    let db_host = |args: &[&str]| {
        let cfg = format!("--config={}", conf.display());
        let o = run_as_postgres(&link, &[&[cfg.as_str(), "--stanza=db"], args].concat(), &[]);
        assert!(o.status.success(), "pgbackrest {args:?}: {}", text(&o));
        o
    };
    // pgBackRest's years: a full and an incr.
    db_host(&["stanza-create"]);
    primary.sql("create table t as select g as id, md5(g::text) as v from generate_series(1, 20000) g");
    db_host(&["backup", "--type=full"]);
    primary.sql("update t set v = 'changed' where id % 5 = 0");
    db_host(&["backup", "--type=incr"]);
    primary.archive_now();

    // The switch: pgstrata on both hosts, the volume the repository host's alone, its server
    // serving it, the database host reaching it through repo1-host.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(support::bin(), &link).unwrap();
    let pki = scratch.path("pki");
    let ca = Ca::new(&pki, "cluster-ca");
    let (server_crt, server_key) = ca.issue("repo-server", "repo-host-0", Some(&format!("IP:{REPO_HOST}")));
    let (client_crt, client_key) = ca.issue("client-tls", CLIENT_CN, None);
    std::fs::copy(&server_crt, rh.join("server/server-tls.crt")).unwrap();
    std::fs::copy(&server_key, rh.join("server/server-tls.key")).unwrap();
    std::fs::copy(&ca.crt, rh.join("server/tls-ca.crt")).unwrap();
    let port = free_port();
    std::fs::write(
        rh.join("etc/pgbackrest.conf"),
        format!(
            "[global]\nrepo1-path={rh}/repo1\nlog-path={rh}/log\nlog-level-file=off\ntls-server-address={REPO_HOST}\n\
             tls-server-auth={CLIENT_CN}=db\ntls-server-ca-file={sd}/tls-ca.crt\n\
             tls-server-cert-file={sd}/server-tls.crt\ntls-server-key-file={sd}/server-tls.key\ntls-server-port={port}\n",
            rh = rh.display(),
            sd = rh.join("server").display(),
        ),
    )
    .unwrap();
    chown_repo_host(rh);
    std::fs::set_permissions(rh.join("repo1"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(
        &conf,
        format!(
            "[global]\n{common}repo1-host={REPO_HOST}\nrepo1-host-type=tls\nrepo1-host-port={port}\n\
             repo1-host-ca-file={ca}\nrepo1-host-cert-file={crt}\nrepo1-host-key-file={key}\n\n{db_section}",
            ca = ca.crt.display(),
            crt = client_crt.display(),
            key = client_key.display(),
        ),
    )
    .unwrap();
    chown_postgres(&pki);
    let server = Server::start(Host::Repository, &link, &rh.join("etc"), scratch.dir.path().join("server.out"));

    let failed = primary.sql("select failed_count from pg_stat_archiver");
    primary.sql("insert into t select g, 'after the switch' from generate_series(20001, 20100) g");
    primary.archive_now();
    assert_eq!(
        primary.sql("select failed_count from pg_stat_archiver"),
        failed,
        "archiving through the repository host failed after the switch: {}",
        server.log()
    );
    assert!(rh.join("repo1/stanza/db/stanza.info").is_file(), "pgstrata's stanza was not made on the repository host");
    let at_end = primary.sql(sum);
    let o = db_host(&["info", "--output=json"]);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let labels: Vec<&str> =
        info[0]["backup"].as_array().unwrap().iter().map(|b| b["label"].as_str().unwrap()).collect();
    assert_eq!(labels.len(), 2, "pgBackRest's backups through the repository host: {info}");
    let dir = scratch.dir.path().join("restored");
    db_host(&["restore", &format!("--pg1-path={}", dir.display()), "--archive-mode=off"]);
    let copy = Cluster::existing(&scratch, dir, "restored");
    copy.start();
    copy.wait_promoted();
    assert_eq!(copy.sql(sum), at_end, "pgBackRest's incr restored through the repository host");
    copy.stop();
    // Stopped while the server still runs: its last segment is archived through it.
    primary.stop();
}
