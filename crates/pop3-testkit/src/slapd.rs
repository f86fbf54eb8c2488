// SPDX-License-Identifier: AGPL-3.0-only
//! A private OpenLDAP server (Debian's `slapd`): its own cn=config made
//! with `slapadd -n 0` in a temporary directory, an MDB database for
//! `dc=example,dc=org`, listening on a free loopback port (StartTLS with
//! a given certificate, when one is given), stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::free_port;

pub const SUFFIX: &str = "dc=example,dc=org";
pub const ADMIN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PASSWORD: &str = "admin-secret";
/// The lookup account the tests give pop3d (it may read userPassword).
pub const LOOKUP: &str = "cn=pop3d,ou=services,dc=example,dc=org";
pub const LOOKUP_PASSWORD: &str = "lookup-secret";

pub struct Slapd {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Slapd {
    /// A running server holding the base entries and the lookup account;
    /// `tls`: PEM certificate and key for StartTLS. None (after [`skip`])
    /// where slapd is not installed.
    pub fn start(tls: Option<(&str, &str)>) -> Option<Slapd> {
        let dir = crate::server_dir("slapd", "slapadd", &["-VV"], "slapd, ldap-utils")?;
        for sub in ["slapd.d", "db"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let tls_config = match tls {
            Some((cert, key)) => {
                std::fs::write(dir.join("cert.pem"), cert).unwrap();
                std::fs::write(dir.join("key.pem"), key).unwrap();
                format!(
                    "olcTLSCertificateFile: {d}/cert.pem\nolcTLSCertificateKeyFile: {d}/key.pem\n",
                    d = dir.display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "dn: cn=config\nobjectClass: olcGlobal\ncn: config\nolcPidFile: {d}/slapd.pid\n{tls_config}\n\
             dn: cn=module{{0}},cn=config\nobjectClass: olcModuleList\ncn: module{{0}}\n\
             olcModulePath: /usr/lib/ldap\nolcModuleLoad: back_mdb\n\n\
             dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n\
             include: file:///etc/ldap/schema/core.ldif\n\n\
             include: file:///etc/ldap/schema/cosine.ldif\n\n\
             include: file:///etc/ldap/schema/nis.ldif\n\n\
             include: file:///etc/ldap/schema/inetorgperson.ldif\n\n\
             dn: olcDatabase={{-1}}frontend,cn=config\nobjectClass: olcDatabaseConfig\n\
             objectClass: olcFrontendConfig\nolcDatabase: {{-1}}frontend\n\n\
             dn: olcDatabase={{0}}config,cn=config\nobjectClass: olcDatabaseConfig\n\
             olcDatabase: {{0}}config\nolcAccess: {{0}}to * by * none\n\n\
             dn: olcDatabase={{1}}mdb,cn=config\nobjectClass: olcDatabaseConfig\n\
             objectClass: olcMdbConfig\nolcDatabase: {{1}}mdb\nolcDbDirectory: {d}/db\n\
             olcSuffix: {SUFFIX}\nolcRootDN: {ADMIN}\nolcRootPW: {ADMIN_PASSWORD}\n\
             olcDbMaxSize: 10485760\n\
             olcAccess: {{0}}to attrs=userPassword by dn.exact=\"{LOOKUP}\" read by anonymous auth by * none\n\
             olcAccess: {{1}}to * by * read\n",
            d = dir.display()
        );
        std::fs::write(dir.join("config.ldif"), config).unwrap();
        let out = Command::new("slapadd")
            .args(["-n", "0", "-F"])
            .arg(dir.join("slapd.d"))
            .arg("-l")
            .arg(dir.join("config.ldif"))
            .output()
            .expect("slapadd runs");
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = Slapd {
            port: free_port(),
            dir,
            child: None,
        };
        server.start_again();
        server.add(&format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
             dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n\n\
             dn: {LOOKUP}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
             cn: pop3d\nuserPassword: {LOOKUP_PASSWORD}\n"
        ));
        Some(server)
    }

    pub fn uri(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Start (again, after [`Slapd::stop`]); back once it listens.
    pub fn start_again(&mut self) {
        let child = Command::new("slapd")
            .args(["-d", "0", "-h"])
            .arg(format!("{}/", self.uri()))
            .arg("-F")
            .arg(self.dir.join("slapd.d"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slapd starts");
        self.child = Some(child);
        crate::wait_listening(self.port, "slapd listening");
    }

    /// Stop it (SIGTERM) and wait.
    pub fn stop(&mut self) {
        crate::terminate(&mut self.child);
    }

    /// Add entries (LDIF) as the administrator, with Debian's ldapadd.
    pub fn add(&self, ldif: &str) {
        crate::run_with_input(
            Command::new("ldapadd").args([
                "-x",
                "-H",
                &self.uri(),
                "-D",
                ADMIN,
                "-w",
                ADMIN_PASSWORD,
            ]),
            ldif.as_bytes(),
        );
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        crate::kill_and_remove(&mut self.child, &self.dir);
    }
}
