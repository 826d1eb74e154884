//! What an AMQP URL asks for: the broker, the AMQP parameters, and for `amqps://` the
//! TLS settings (docs/security.md, "Transport security (TLS)").
//!
//! `amqps://user:password@host:5671/vhost?cacertfile=/ca.pem&certfile=/c.pem&keyfile=/k.pem`
//!
//! - `amqps://` encrypts with rustls and verifies the broker's certificate, always:
//!   its chain against the platform's trust store plus the CA in `cacertfile`, and its
//!   name (a DNS name or an IP address) against the URL's host. There is no way to
//!   turn verification off.
//! - `cacertfile=<path>`: PEM certificates of the CA (or CAs) that signed the broker's
//!   certificate, trusted in addition to the platform's roots (RabbitMQ's own URI
//!   parameter name).
//! - `certfile=<path>&keyfile=<path>`: a client certificate (PEM) and its PKCS#8 PEM
//!   key, for a broker that asks for one (`ssl_options.verify = verify_peer`).
//!
//! TLS parameters on an `amqp://` URL are refused rather than ignored: a URL that says
//! `cacertfile` but would be sent in clear text is a mistake worth an error.

use std::str::FromStr;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri};

use crate::redact;

/// The TLS parameters this module reads from a URL's query.
pub const TLS_PARAMS: [&str; 3] = ["cacertfile", "certfile", "keyfile"];

/// A parsed URL, ready for lapin.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub uri: AMQPUri,
    pub tls: OwnedTLSConfig,
}

/// Why a URL cannot be used. Never holds the password.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("not a valid AMQP URL: {0}")]
    Invalid(String),
    #[error("{param}= is for amqps:// URLs (this one would connect without TLS)")]
    TlsParamWithoutTls { param: &'static str },
    #[error("certfile= and keyfile= go together (a client certificate and its key)")]
    HalfIdentity,
    #[error("cannot read {param}={path}: {source}")]
    File {
        param: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Parses `url`, asking for a `heartbeat` of `heartbeat_secs` unless the URL names
/// one, and reads the files its TLS parameters name.
pub(crate) fn parse(url: &str, heartbeat_secs: u16) -> Result<Endpoint, UrlError> {
    // The parsers quote the URL they refuse (`Invalid URL: '<url>'`): never repeat it.
    let invalid = |reason: String| {
        UrlError::Invalid(redact::text_knowing(&reason.replace(url, "<the URL>"), url))
    };
    let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    let mut uri = AMQPUri::from_str(url).map_err(invalid)?;
    // amq-protocol-uri takes the host from `Url::domain()`, which is None for an IP
    // address, and then falls back to `localhost`: `amqp://10.0.0.5` would connect to
    // the local machine, and TLS would check the certificate for the wrong name.
    match parsed.host() {
        Some(url::Host::Ipv4(ip)) => uri.authority.host = ip.to_string(),
        Some(url::Host::Ipv6(ip)) => uri.authority.host = ip.to_string(),
        Some(url::Host::Domain(_)) | None => {}
    }
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(heartbeat_secs);
    }
    let param = |name: &str| {
        parsed
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if uri.scheme == AMQPScheme::AMQP {
        if let Some(param) = TLS_PARAMS.into_iter().find(|p| param(p).is_some()) {
            return Err(UrlError::TlsParamWithoutTls { param });
        }
    }
    let read = |param: &'static str, path: String| {
        std::fs::read(&path).map_err(|source| UrlError::File {
            param,
            path,
            source,
        })
    };
    let mut tls = OwnedTLSConfig::default();
    if let Some(path) = param("cacertfile") {
        let pem = read("cacertfile", path)?;
        tls.cert_chain = Some(String::from_utf8_lossy(&pem).into_owned());
    }
    tls.identity = match (param("certfile"), param("keyfile")) {
        (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
            pem: read("certfile", cert)?,
            key: read("keyfile", key)?,
        }),
        (None, None) => None,
        _ => return Err(UrlError::HalfIdentity),
    };
    Ok(Endpoint { uri, tls })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_address_is_the_host_connected_to() {
        let e = parse("amqp://u:p@10.1.2.3:5673/%2f", 5).unwrap();
        assert_eq!(e.uri.authority.host, "10.1.2.3");
        assert_eq!(e.uri.authority.port, 5673);
        assert_eq!(e.uri.vhost, "/");
        let e = parse("amqps://[::1]/v", 5).unwrap();
        assert_eq!(e.uri.authority.host, "::1");
        assert_eq!(e.uri.authority.port, 5671);
        let e = parse("amqp://mq.internal", 5).unwrap();
        assert_eq!(e.uri.authority.host, "mq.internal");
    }

    #[test]
    fn a_heartbeat_is_asked_for_unless_the_url_names_one() {
        assert_eq!(
            parse("amqp://h/%2f", 5).unwrap().uri.query.heartbeat,
            Some(5)
        );
        let e = parse("amqp://h/%2f?heartbeat=30&frame_max=8192", 5).unwrap();
        assert_eq!(e.uri.query.heartbeat, Some(30));
        assert_eq!(e.uri.query.frame_max, Some(8192));
    }

    #[test]
    fn tls_files_are_read_and_misuse_is_refused() {
        let dir = std::env::temp_dir().join(format!("sagaflow-endpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let url = format!("amqps://h/%2f?cacertfile={}", ca.display());
        let e = parse(&url, 5).unwrap();
        assert!(e.tls.cert_chain.unwrap().starts_with("-----BEGIN"));
        assert!(e.tls.identity.is_none());

        let plain = format!("amqp://h/%2f?cacertfile={}", ca.display());
        assert!(matches!(
            parse(&plain, 5),
            Err(UrlError::TlsParamWithoutTls {
                param: "cacertfile"
            })
        ));
        let half = format!("amqps://h/%2f?certfile={}", ca.display());
        assert!(matches!(parse(&half, 5), Err(UrlError::HalfIdentity)));
        let missing = parse("amqps://h/%2f?cacertfile=/nonexistent/ca.pem", 5).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("cannot read cacertfile=/nonexistent/ca.pem"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_url_is_reported_without_its_password() {
        for url in [
            "amqp://u:pw9Secret@",
            "http://u:pw9Secret@h/",
            "amqp:u:pw9Secret",
        ] {
            let e = parse(url, 5).unwrap_err().to_string();
            assert!(!e.contains("pw9Secret"), "{url}: {e}");
        }
    }
}
