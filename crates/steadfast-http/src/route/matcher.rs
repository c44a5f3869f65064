use std::fmt;

use http::Method;

use crate::error::ConfigError;

/// Which requests a route takes: an HTTP method (or any) and a path pattern, or a gRPC service
/// (and optionally one of its methods).
///
/// **HTTP patterns** are matched segment by segment against the request's path (without its
/// query): a literal segment matches itself, `{name}` matches any one non-empty segment, and a
/// trailing `*` or `{*name}` matches the rest of the path (zero or more segments). Paths are
/// compared as sent (percent-encoded, case-sensitive; `/a/` is not `/a`). A pattern starts with
/// `/`; a bad one is a [`ConfigError`] with the path `pattern`, never a panic.
///
/// **gRPC matches** compare the request path `/pkg.Service/Method`: a service alone matches
/// every method of the service; gRPC requests are all `POST`, so the HTTP method is not checked.
///
/// ```
/// use http::Method;
/// use steadfast_http::route::RouteMatch;
///
/// let search = RouteMatch::http("/search/{index}/*")?;
/// assert!(search.matches(&Method::GET, "/search/books/a/b"));
/// assert!(search.matches(&Method::GET, "/search/books"));
/// assert!(!search.matches(&Method::GET, "/search"));
///
/// let pay = RouteMatch::http("/payments/{id}")?.method(Method::POST);
/// assert!(pay.matches(&Method::POST, "/payments/7"));
/// assert!(!pay.matches(&Method::GET, "/payments/7"));
/// assert!(!pay.matches(&Method::POST, "/payments/7/refund"));
///
/// let echo = RouteMatch::grpc("helloworld.Greeter", Some("SayHello"))?;
/// assert!(echo.matches(&Method::POST, "/helloworld.Greeter/SayHello"));
/// assert!(!echo.matches(&Method::POST, "/helloworld.Greeter/SayBye"));
/// let all = RouteMatch::grpc("helloworld.Greeter", None)?;
/// assert!(all.matches(&Method::POST, "/helloworld.Greeter/SayBye"));
///
/// let err = RouteMatch::http("/files/*/x").unwrap_err();
/// assert_eq!(err.path(), "pattern");
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Http {
        method: Option<Method>,
        segments: Vec<Segment>,
        rest: bool,
    },
    Grpc {
        service: String,
        method: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

impl RouteMatch {
    /// Requests of any HTTP method whose path matches `pattern` (see the type's docs for the
    /// syntax); restrict the method with [`method`](Self::method).
    ///
    /// ```
    /// # use steadfast_http::route::RouteMatch;
    /// assert!(RouteMatch::http("/users/{id}").is_ok());
    /// assert_eq!(RouteMatch::http("users").unwrap_err().path(), "pattern");
    /// assert_eq!(RouteMatch::http("/a/{}").unwrap_err().path(), "pattern");
    /// assert_eq!(RouteMatch::http("/a/b{c}").unwrap_err().path(), "pattern");
    /// ```
    pub fn http(pattern: &str) -> Result<Self, ConfigError> {
        let Some(body) = pattern.strip_prefix('/') else {
            return Err(ConfigError::conflict(
                "pattern",
                "a path pattern starts with '/'",
            ));
        };
        let mut segments = Vec::new();
        let mut rest = false;
        if !body.is_empty() {
            let parts: Vec<&str> = body.split('/').collect();
            let last = parts.len() - 1;
            for (i, part) in parts.into_iter().enumerate() {
                if part == "*" || (part.starts_with("{*") && part.ends_with('}')) {
                    if i != last {
                        return Err(ConfigError::conflict(
                            "pattern",
                            "a wildcard (`*` or `{*name}`) must be the last segment",
                        ));
                    }
                    if part != "*" && part.len() == 3 {
                        return Err(ConfigError::conflict(
                            "pattern",
                            "a wildcard `{*name}` needs a name",
                        ));
                    }
                    rest = true;
                } else if let Some(name) = part.strip_prefix('{') {
                    let Some(name) = name.strip_suffix('}') else {
                        return Err(ConfigError::conflict(
                            "pattern",
                            "a parameter `{name}` is a whole segment, closed by '}'",
                        ));
                    };
                    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                        return Err(ConfigError::conflict(
                            "pattern",
                            "a parameter's name is letters, digits and '_'",
                        ));
                    }
                    segments.push(Segment::Param);
                } else if part.contains(['{', '}', '*']) {
                    return Err(ConfigError::conflict(
                        "pattern",
                        "'{', '}' and '*' only appear as a whole segment (`{name}`, `*`, `{*name}`)",
                    ));
                } else {
                    segments.push(Segment::Literal(part.to_owned()));
                }
            }
        }
        Ok(RouteMatch {
            kind: Kind::Http {
                method: None,
                segments,
                rest,
            },
        })
    }

    /// Only requests with this HTTP method (on an HTTP match; a gRPC match ignores it).
    ///
    /// ```
    /// # use http::Method;
    /// # use steadfast_http::route::RouteMatch;
    /// let m = RouteMatch::http("/a")?.method(Method::PUT);
    /// assert!(!m.matches(&Method::GET, "/a"));
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    #[must_use]
    pub fn method(mut self, m: Method) -> Self {
        if let Kind::Http { method, .. } = &mut self.kind {
            *method = Some(m);
        }
        self
    }

    /// A gRPC service (`pkg.Service`, as in the request path `/pkg.Service/Method`), all its
    /// methods or only `method`. The service is dot-separated identifiers, the method one
    /// identifier (ASCII letters, digits, `_`, as in protobuf); anything else is a
    /// [`ConfigError`] at `service` or `method`.
    ///
    /// ```
    /// # use steadfast_http::route::RouteMatch;
    /// assert!(RouteMatch::grpc("pkg.Echo", Some("Say")).is_ok());
    /// assert_eq!(RouteMatch::grpc("", None).unwrap_err().path(), "service");
    /// assert_eq!(RouteMatch::grpc("pkg.Echo", Some("a/b")).unwrap_err().path(), "method");
    /// assert_eq!(RouteMatch::grpc("pkg..Echo", None).unwrap_err().path(), "service");
    /// assert_eq!(RouteMatch::grpc("pkg.Echo", Some("Say.Hi")).unwrap_err().path(), "method");
    /// assert!(RouteMatch::grpc("Echo_2", Some("say_hi")).is_ok());
    /// ```
    pub fn grpc(service: &str, method: Option<&str>) -> Result<Self, ConfigError> {
        check_grpc_name("service", service)?;
        if let Some(m) = method {
            check_grpc_name("method", m)?;
        }
        Ok(RouteMatch {
            kind: Kind::Grpc {
                service: service.to_owned(),
                method: method.map(str::to_owned),
            },
        })
    }

    /// Whether a request with `method` and `path` (the URI's path, without the query) matches.
    ///
    /// ```
    /// # use http::Method;
    /// # use steadfast_http::route::RouteMatch;
    /// assert!(RouteMatch::http("/")?.matches(&Method::GET, "/"));
    /// assert!(!RouteMatch::http("/")?.matches(&Method::GET, "/a"));
    /// assert!(RouteMatch::http("/*")?.matches(&Method::GET, "/a/b"));
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        match &self.kind {
            Kind::Http {
                method: want,
                segments,
                rest,
            } => {
                if want.as_ref().is_some_and(|w| w != method) {
                    return false;
                }
                let Some(body) = path.strip_prefix('/') else {
                    return false;
                };
                let mut parts = body.split('/');
                if body.is_empty() {
                    // "/" has no segment at all.
                    parts.next();
                }
                for seg in segments {
                    match (seg, parts.next()) {
                        (Segment::Literal(l), Some(p)) if l == p => {}
                        (Segment::Param, Some(p)) if !p.is_empty() => {}
                        _ => return false,
                    }
                }
                *rest || parts.next().is_none()
            }
            Kind::Grpc {
                service,
                method: want,
            } => {
                let Some(tail) = path
                    .strip_prefix('/')
                    .and_then(|p| p.strip_prefix(service.as_str()))
                    .and_then(|p| p.strip_prefix('/'))
                else {
                    return false;
                };
                match want {
                    Some(m) => tail == m,
                    None => !tail.is_empty() && !tail.contains('/'),
                }
            }
        }
    }
}

impl fmt::Display for RouteMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Http {
                method,
                segments,
                rest,
            } => {
                if let Some(m) = method {
                    write!(f, "{m} ")?;
                }
                for s in segments {
                    match s {
                        Segment::Literal(l) => write!(f, "/{l}")?,
                        Segment::Param => f.write_str("/{}")?,
                    }
                }
                if *rest {
                    f.write_str("/*")?;
                } else if segments.is_empty() {
                    f.write_str("/")?;
                }
                Ok(())
            }
            Kind::Grpc { service, method } => match method {
                Some(m) => write!(f, "/{service}/{m}"),
                None => write!(f, "/{service}/*"),
            },
        }
    }
}

/// The one check of gRPC names: a service is dot-separated identifiers (`pkg.Service`), a
/// method one identifier (`Method`); identifiers are ASCII letters, digits and `_`, as in
/// protobuf.
fn check_grpc_name(field: &'static str, name: &str) -> Result<(), ConfigError> {
    let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let ok = if field == "method" {
        ident(name)
    } else {
        name.split('.').all(ident)
    };
    if ok {
        Ok(())
    } else if field == "method" {
        Err(ConfigError::out_of_range(
            field,
            name,
            "an identifier (`Method`)",
        ))
    } else {
        Err(ConfigError::out_of_range(
            field,
            name,
            "dot-separated identifiers (`pkg.Service`)",
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn patterns_match_segment_by_segment() {
        let m = RouteMatch::http("/a/{x}/c").unwrap();
        assert!(m.matches(&Method::GET, "/a/b/c"));
        assert!(
            !m.matches(&Method::GET, "/a//c"),
            "a parameter is non-empty"
        );
        assert!(!m.matches(&Method::GET, "/a/b/c/d"));
        assert!(!m.matches(&Method::GET, "/a/b"));
        assert!(!m.matches(&Method::GET, "a/b/c"));
        let r = RouteMatch::http("/files/{*rest}").unwrap();
        assert!(r.matches(&Method::GET, "/files"));
        assert!(r.matches(&Method::GET, "/files/x/y/z"));
        assert!(!r.matches(&Method::GET, "/filesx"));
        assert_eq!(r.to_string(), "/files/*");
    }

    #[test]
    fn bad_patterns_are_config_errors() {
        for bad in [
            "", "x", "/a/*/b", "/{", "/{a", "/a}", "/{a b}", "/{*}", "/a*", "/{*a}/b",
        ] {
            let err = RouteMatch::http(bad).unwrap_err();
            assert_eq!(err.path(), "pattern", "{bad:?}");
        }
    }

    #[test]
    fn grpc_matches_service_and_method() {
        let svc = RouteMatch::grpc("p.S", None).unwrap();
        assert!(svc.matches(&Method::POST, "/p.S/M"));
        assert!(!svc.matches(&Method::POST, "/p.S/"));
        assert!(!svc.matches(&Method::POST, "/p.SX/M"));
        assert!(!svc.matches(&Method::POST, "/p.S"));
        let m = RouteMatch::grpc("p.S", Some("M")).unwrap();
        assert!(m.matches(&Method::GET, "/p.S/M"));
        assert!(!m.matches(&Method::POST, "/p.S/MM"));
    }
}
