//! Secrets out of everything shown: log lines, error messages, API bodies, `Debug`
//! output. The one place that knows what a secret in a connection URL looks like
//! (docs/security.md, "Secrets").
//!
//! - [`url`] hides the password of one URL: `scheme://user:secret@host` becomes
//!   `scheme://user:***@host`, and the value of a `password=` (or `sslpassword=`,
//!   `…secret…=`, `…token…=`) query parameter becomes `***`. Used wherever a
//!   configured URL is shown (`Debug` of the settings, connect errors, the CLI).
//! - [`text`] does the same to every URL inside a free text, and to `password=`
//!   pairs outside URLs: for messages written by someone else (a driver's error that
//!   quotes the URL it could not parse), and as the last filter before a message
//!   leaves the process (the binary's final error line, API error bodies).
//! - [`text_knowing`] also hides the literal secrets of a given URL (its password,
//!   raw and percent-decoded), wherever they appear: for errors raised while
//!   connecting with that URL, which may quote it in a form [`text`] cannot recognise.
//!
//! When in doubt it hides too much: a URL whose query holds an `@` may lose more than
//! its password, never less.

/// What a hidden secret is shown as.
pub const HIDDEN: &str = "***";

/// `url` with its password hidden (see the module docs). Text without `://` is only
/// searched for secret `key=value` pairs.
pub fn url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return pairs(url);
    };
    let (head, rest) = url.split_at(scheme_end + 3);
    // The last `@` ends the user info: a password may hold an unencoded `@`.
    let (userinfo, tail) = match rest.rfind('@') {
        Some(at) => rest.split_at(at),
        None => ("", rest),
    };
    let userinfo = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{HIDDEN}"),
        None => userinfo.to_string(),
    };
    format!("{head}{userinfo}{}", pairs(tail))
}

/// `text` with every URL in it passed through [`url`], and every secret `key=value`
/// pair outside URLs hidden.
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The scheme: letters, digits, `+`, `-`, `.` before `://`.
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        // The URL ends at white space or a quote (how messages delimit one).
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '<' | '>'))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&pairs(&rest[..start]));
        out.push_str(&url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(&pairs(rest));
    out
}

/// [`text`], and every literal secret of `url` (its password as written and
/// percent-decoded, the values of its secret query parameters) replaced wherever it
/// appears.
pub fn text_knowing(message: &str, url: &str) -> String {
    let mut shown = text(message);
    for secret in secrets(url) {
        shown = shown.replace(&secret, HIDDEN);
    }
    shown
}

/// The literal secrets of `url`, longest first (so a secret containing another is
/// replaced whole). Empty strings and the placeholder itself are left out.
pub fn secrets(url: &str) -> Vec<String> {
    let mut found = vec![];
    if let Some((_, rest)) = url.split_once("://") {
        if let Some(at) = rest.rfind('@') {
            if let Some((_, password)) = rest[..at].split_once(':') {
                found.push(password.to_string());
                found.push(percent_decode(password));
            }
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some((key, value)) = pair.split_once('=') {
                if secret_key(key) {
                    found.push(value.to_string());
                    found.push(percent_decode(value));
                }
            }
        }
    }
    found.retain(|s| !s.is_empty() && s != HIDDEN);
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found.dedup();
    found
}

/// Whether a query parameter or `key=value` pair carries a secret.
fn secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key.contains("token")
        || matches!(key.as_str(), "passwd" | "pwd" | "pass")
}

/// Hides the value of every secret `key=value` pair in `s` (a URL's query, a libpq
/// `key=value` connection string, a message). A value ends at `&`, white space or a
/// quote.
fn pairs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key_start = rest[..eq]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
            .map_or(0, |i| i + 1);
        let value_end = rest[eq + 1..]
            .find(|c: char| c.is_whitespace() || matches!(c, '&' | '\'' | '"' | '`'))
            .map_or(rest.len(), |i| eq + 1 + i);
        out.push_str(&rest[..=eq]);
        if secret_key(&rest[key_start..eq]) && value_end > eq + 1 {
            out.push_str(HIDDEN);
        } else {
            out.push_str(&rest[eq + 1..value_end]);
        }
        rest = &rest[value_end..];
    }
    out.push_str(rest);
    out
}

/// `%XX` decoded (lossy for invalid UTF-8), to find a password quoted decoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_keeps_everything_but_its_password() {
        let table = [
            (
                "postgres://app:s3cret@db:5432/sagaflow",
                "postgres://app:***@db:5432/sagaflow",
            ),
            (
                "amqps://app:s3cr@t@mq:5671/%2f?cacertfile=/etc/ca.pem",
                "amqps://app:***@mq:5671/%2f?cacertfile=/etc/ca.pem",
            ),
            (
                "postgres://app@db/x?sslmode=verify-full&password=s3cret&application_name=a",
                "postgres://app@db/x?sslmode=verify-full&password=***&application_name=a",
            ),
            (
                "postgresql://db/x?sslpassword=k3y&sslrootcert=/ca.pem",
                "postgresql://db/x?sslpassword=***&sslrootcert=/ca.pem",
            ),
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "amqp://guest:***@127.0.0.1:5672/%2f",
            ),
            ("amqp://mq", "amqp://mq"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("amqp://:only@h", "amqp://:***@h"),
            ("not a url", "not a url"),
            (
                "host=db password=s3cret user=app",
                "host=db password=*** user=app",
            ),
        ];
        for (given, shown) in table {
            assert_eq!(url(given), shown, "{given}");
        }
    }

    #[test]
    fn urls_inside_a_message_are_redacted() {
        let m =
            "Invalid URL: 'amqp://app:pw1@mq:5672/%2f' (and postgres://u:pw2@db/x?password=pw3)";
        let shown = text(m);
        assert_eq!(
            shown,
            // The value of `password=` runs to the end of the URL: the `)` goes with it.
            "Invalid URL: 'amqp://app:***@mq:5672/%2f' (and postgres://u:***@db/x?password=***"
        );
        assert_eq!(text("no url here"), "no url here");
        assert_eq!(text("x = 1, password=hunter2"), "x = 1, password=***");
    }

    #[test]
    fn known_secrets_are_hidden_in_any_form() {
        let u = "amqp://app:p%40ss%20word@mq/%2f";
        assert_eq!(secrets(u), vec!["p%40ss%20word", "p@ss word"]);
        let m = "auth failed for app with p@ss word; raw p%40ss%20word";
        let shown = text_knowing(m, u);
        assert!(
            !shown.contains("p@ss") && !shown.contains("p%40ss"),
            "{shown}"
        );
        assert_eq!(secrets("postgres://h/db?password=x%21"), vec!["x%21", "x!"]);
        assert!(secrets("amqp://h").is_empty());
        // A trailing `%` is kept as it is.
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("a%41"), "aA");
    }
}
