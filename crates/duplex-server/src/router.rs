//! Where a request goes: method and path to a route. Pure.

/// A route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The echo tester page.
    Page,
    /// An embedded page or script other than the echo tester (its path).
    Asset(&'static str),
    /// Prometheus metrics.
    Metrics,
    /// Health for load balancers.
    Health,
    /// A server API method.
    Api(String),
    /// The echo WebSocket.
    Echo,
    /// The Centrifugo-protocol WebSocket.
    Centrifuge,
    /// The Server-Sent Events stream.
    Sse,
    /// Nothing here.
    NotFound,
    /// The path exists, the method does not; the value is the `Allow` header.
    MethodNotAllowed(&'static str),
}

/// The WebSocket endpoint of the Centrifugo client protocol.
pub const CENTRIFUGE_PATH: &str = "/connection/websocket";

/// Routes a request. `path` excludes the query.
pub fn route(method: &str, path: &str) -> Route {
    let get = |r: Route| match method {
        "GET" | "HEAD" => r,
        _ => Route::MethodNotAllowed("GET, HEAD"),
    };
    match path {
        "/" | "/index.html" => get(Route::Page),
        p if crate::web::asset(p).is_some() => {
            get(Route::Asset(crate::web::asset(p).map_or("", |a| a.path)))
        }
        "/metrics" => get(Route::Metrics),
        "/health" => get(Route::Health),
        "/echo" => match method {
            "GET" => Route::Echo,
            _ => Route::MethodNotAllowed("GET"),
        },
        crate::front::sse::SSE_PATH => get(Route::Sse),
        CENTRIFUGE_PATH => match method {
            "GET" => Route::Centrifuge,
            _ => Route::MethodNotAllowed("GET"),
        },
        _ => match path.strip_prefix("/api/") {
            Some(m) if !m.is_empty() && !m.contains('/') => match method {
                "POST" => Route::Api(m.to_string()),
                _ => Route::MethodNotAllowed("POST"),
            },
            _ => Route::NotFound,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/"), Route::Page);
        assert_eq!(route("GET", "/live"), Route::Asset("/live"));
        assert_eq!(route("GET", "/chat"), Route::Asset("/chat"));
        assert_eq!(route("GET", "/game"), Route::Asset("/game"));
        assert_eq!(route("GET", "/duplex.js"), Route::Asset("/duplex.js"));
        assert_eq!(route("POST", "/chat"), Route::MethodNotAllowed("GET, HEAD"));
        assert_eq!(route("POST", "/"), Route::MethodNotAllowed("GET, HEAD"));
        assert_eq!(route("GET", "/metrics"), Route::Metrics);
        assert_eq!(route("GET", "/echo"), Route::Echo);
        assert_eq!(route("GET", "/connection/websocket"), Route::Centrifuge);
        assert_eq!(route("GET", "/connection/sse"), Route::Sse);
        assert_eq!(
            route("POST", "/connection/sse"),
            Route::MethodNotAllowed("GET, HEAD")
        );
        assert_eq!(route("POST", "/api/publish"), Route::Api("publish".into()));
        assert_eq!(
            route("GET", "/api/publish"),
            Route::MethodNotAllowed("POST")
        );
        assert_eq!(route("POST", "/api/"), Route::NotFound);
        assert_eq!(route("POST", "/api/a/b"), Route::NotFound);
        assert_eq!(route("GET", "/nope"), Route::NotFound);
    }
}
