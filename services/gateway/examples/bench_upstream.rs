//! The upstream of the gateway benchmark (scripts/bench-gateway.sh): answers every request
//! with a short body, and serves a JWKS so the gateway can verify the tokens it writes out.
//!
//! `bench_upstream PORT TOKENS_FILE [COUNT]` writes COUNT signed access tokens (one per line,
//! distinct users) to TOKENS_FILE, then serves on 127.0.0.1:PORT until killed.

use std::{convert::Infallible, io::Write as _, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, Response};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use service_kit::jwt::{claims_now, Jwks, SigningKey};

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .ok_or("usage: bench_upstream PORT TOKENS_FILE [COUNT]")?
        .parse()?;
    let tokens_file = args
        .next()
        .ok_or("usage: bench_upstream PORT TOKENS_FILE [COUNT]")?;
    let count: usize = args.next().map(|c| c.parse()).transpose()?.unwrap_or(1000);

    let (key, _) = SigningKey::generate().map_err(|e| e.to_string())?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tokens_file)?);
    for _ in 0..count {
        let claims = claims_now(
            "gravity-auth",
            "gravity",
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4(),
            vec!["user".into()],
            Duration::from_secs(3600),
        );
        writeln!(out, "{}", key.sign(&claims).map_err(|e| e.to_string())?)?;
    }
    out.flush()?;
    let jwks = Bytes::from(serde_json::to_vec(&Jwks {
        keys: vec![key.jwk()],
    })?);
    let hello = Bytes::from_static(b"hello, world\n");

    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let state = Arc::new((jwks, hello));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let state = Arc::clone(&state);
                    async move {
                        let (body, kind) = if request.uri().path() == "/.well-known/jwks.json" {
                            (state.0.clone(), "application/json")
                        } else {
                            (state.1.clone(), "text/plain")
                        };
                        let mut response = Response::new(Full::new(body));
                        response
                            .headers_mut()
                            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
                        Ok::<_, Infallible>(response)
                    }
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
