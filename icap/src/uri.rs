//! ICAP request URIs: `icap://host[:port]/service[?query]`, and `icaps://`.
//!
//! The service is the path without its leading slash; it is what a server
//! routes on (`/avscan`, `/srv_clamav`). Userinfo and fragments have no
//! meaning in ICAP and are refused.

use std::fmt;

use nom::branch::alt;
use nom::bytes::complete::{tag_no_case, take_while, take_while1};
use nom::character::complete::char;
use nom::combinator::{opt, rest};
use nom::sequence::{delimited, preceded};
use nom::{IResult, Parser};

use crate::syntax::decimal;
use crate::Error;

/// `icap` or `icaps` (ICAP over TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `icap://`, port 1344 by default.
    Icap,
    /// `icaps://`, port 11344 by default.
    Icaps,
}

impl Scheme {
    /// The port used when the URI names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Icap => 1344,
            Scheme::Icaps => 11344,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Icap => "icap",
            Scheme::Icaps => "icaps",
        }
    }
}

/// A parsed ICAP request URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IcapUri {
    /// `icap` or `icaps`.
    pub scheme: Scheme,
    /// The host: a name, an IPv4 address, or an IPv6 address in brackets.
    pub host: String,
    /// The port, when the URI names one.
    pub port: Option<u16>,
    /// The path without its leading `/`: the service name, possibly with
    /// further segments (`avscan` or `a/b`).
    pub service: String,
    /// The query, without its `?`.
    pub query: Option<String>,
}

impl IcapUri {
    /// The port, or the scheme's default.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(self.scheme.default_port())
    }

    /// Parses an ICAP URI.
    pub fn parse(s: &[u8]) -> Result<IcapUri, Error> {
        if s.contains(&b'#') {
            return Err(Error::InvalidUri("fragment"));
        }
        let (s, scheme) =
            scheme(s).map_err(|_| Error::InvalidUri("scheme is not icap or icaps"))?;
        let (s, authority) = take_while(|b| b != b'/' && b != b'?')
            .parse(s)
            .map_err(|_: nom::Err<()>| Error::InvalidUri("authority"))?;
        if authority.contains(&b'@') {
            return Err(Error::InvalidUri("userinfo"));
        }
        let (host, port) = host_port(authority)?;
        let (query, path) = match s.iter().position(|b| *b == b'?') {
            Some(q) => (Some(&s[q + 1..]), &s[..q]),
            None => (None, s),
        };
        if !path
            .iter()
            .chain(query.unwrap_or_default())
            .all(|b| is_uri_byte(*b))
        {
            return Err(Error::InvalidUri("character not allowed in a URI"));
        }
        let service = path.strip_prefix(b"/").unwrap_or(path);
        Ok(IcapUri {
            scheme,
            host: ascii(host),
            port,
            service: ascii(service),
            query: query.map(ascii),
        })
    }
}

fn ascii(b: &[u8]) -> String {
    // Callers only pass bytes already checked to be printable ASCII.
    String::from_utf8_lossy(b).into_owned()
}

/// Printable ASCII other than space: what may stand in a path or query.
fn is_uri_byte(b: u8) -> bool {
    (b'!'..=b'~').contains(&b)
}

fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)
}

fn scheme(i: &[u8]) -> IResult<&[u8], Scheme, ()> {
    alt((
        tag_no_case("icaps://").map(|_| Scheme::Icaps),
        tag_no_case("icap://").map(|_| Scheme::Icap),
    ))
    .parse(i)
}

fn host_port(authority: &[u8]) -> Result<(&[u8], Option<u16>), Error> {
    let ipv6 = delimited(
        char('['),
        take_while1(|b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
        char(']'),
    );
    let host = alt((
        nom::combinator::recognize(ipv6),
        take_while1(is_reg_name_byte),
    ));
    let parsed: IResult<&[u8], _, ()> = (host, opt(preceded(char(':'), rest))).parse(authority);
    let (rest, (host, port)) = parsed.map_err(|_| Error::InvalidUri("missing or invalid host"))?;
    if !rest.is_empty() {
        return Err(Error::InvalidUri("missing or invalid host"));
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            decimal(p)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0)
                .ok_or(Error::InvalidUri("invalid port"))?,
        ),
    };
    Ok((host, port))
}

impl fmt::Display for IcapUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, "/{}", self.service)?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_squid_and_c_icap_send() {
        let u = IcapUri::parse(b"icap://127.0.0.1:1344/av_resp").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.service.as_str()),
            ("127.0.0.1", Some(1344), "av_resp")
        );
        let u = IcapUri::parse(b"ICAPS://[::1]/srv_clamav?allow204=on").unwrap();
        assert_eq!(u.scheme, Scheme::Icaps);
        assert_eq!(u.host, "[::1]");
        assert_eq!(u.port_or_default(), 11344);
        assert_eq!(u.query.as_deref(), Some("allow204=on"));
        assert_eq!(u.to_string(), "icaps://[::1]/srv_clamav?allow204=on");
        assert_eq!(IcapUri::parse(b"icap://h").unwrap().service, "");
    }

    #[test]
    fn refuses_what_is_not_an_icap_uri() {
        let bad: &[(&[u8], &str)] = &[
            (b"http://h/s", "scheme is not icap or icaps"),
            (b"/avscan", "scheme is not icap or icaps"),
            (b"icap:///s", "missing or invalid host"),
            (b"icap://h:99999/s", "invalid port"),
            (b"icap://h:/s", "invalid port"),
            (b"icap://u@h/s", "userinfo"),
            (b"icap://h/s#f", "fragment"),
            (b"icap://h/s\x7f", "character not allowed in a URI"),
        ];
        for (uri, why) in bad {
            assert_eq!(
                IcapUri::parse(uri),
                Err(Error::InvalidUri(why)),
                "{}",
                String::from_utf8_lossy(uri)
            );
        }
    }
}
