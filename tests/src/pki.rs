//! A test PKI minted with openssl: P-256 CAs and leaves with chosen SANs, for tests whose
//! identities the Istio fixture certificate cannot give (several trust domains, several
//! URI SANs in a given order).

use std::path::Path;
use std::process::Command;

/// Runs `openssl` with `args` in `dir`; a failure fails the test with openssl's words.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` with `args`, making a new unencrypted (PKCS#8) P-256 key at `key`.
pub fn req_new_p256(dir: &Path, key: &str, args: &[&str]) {
    let mut all = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
    ];
    all.extend_from_slice(args);
    openssl(dir, &all);
}

/// A self-signed CA `name` in `dir` (`<name>.pem`, `<name>.key`); the certificate's path.
pub fn ca(dir: &Path, name: &str) -> String {
    req_new_p256(
        dir,
        &format!("{name}.key"),
        &[
            "-x509",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/O={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(format!("{name}.pem")).display().to_string()
}

/// A leaf `name` signed by CA `issuer` (made by [`ca`] in the same `dir`), for client and
/// server use, with `san` as openssl writes it (`URI:spiffe://a/b,DNS:x`); its (certificate,
/// key) paths.
pub fn leaf(dir: &Path, name: &str, issuer: &str, san: &str) -> (String, String) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth,serverAuth\n"
        ),
    )
    .unwrap();
    req_new_p256(
        dir,
        &format!("{name}.key"),
        &[
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/O={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{issuer}.pem"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
    let path = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
    (path("pem"), path("key"))
}
