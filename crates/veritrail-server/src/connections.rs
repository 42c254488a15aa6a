//! The accept loop, for plain HTTP and HTTPS alike, and the hygiene of its connections.
//!
//! Idle and slow clients must never lock others out. So every connection gets a time limit for
//! its request headers, an idle connection is closed after [`Limits::idle_timeout`], and the number
//! of open connections is capped below the process's file limit. At the cap a new client is
//! still accepted: the connection idle the longest (no request in progress: a client that sends
//! nothing, or headers byte by byte, counts as idle) is closed to make room, so thousands of
//! stalled connections cost the next real client nothing but one accept.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::tls::{fingerprint, ClientCert};

/// How long open connections get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take over the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections open at once (lowered to fit the file limit).
    pub max_connections: usize,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// How long a connection may stay open without a request in progress.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Raises the soft limit on open files to the hard limit, and returns the cap on connections
/// that fits under it: `wanted`, or fewer when the limit is lower.
pub fn fit_to_file_limit(wanted: usize) -> usize {
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    let soft = unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return wanted;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    };
    // Half the files for connections, half for the store (each tenant's index keeps up to
    // the index's bounded set of files open), key registry and logs.
    let fits = (soft / 2).max(16);
    wanted.min(usize::try_from(fits).unwrap_or(usize::MAX))
}

/// What the accept loop knows of one connection.
struct Conn {
    /// Requests in progress (a response counts until its body is sent).
    busy: AtomicUsize,
    /// When it last started or finished a request, in ms since the server started.
    last_active_ms: AtomicU64,
    /// Closes the connection.
    close: Notify,
}

/// The open connections.
struct Registry {
    started: Instant,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the connection idle the longest; false when every connection is busy. It leaves
    /// the registry at once, so that it is neither counted nor chosen again while it closes.
    fn evict_one(&self) -> bool {
        let mut conns = self.lock();
        let victim = conns
            .iter()
            .filter(|(_, c)| c.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, c)| c.last_active_ms.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match victim.and_then(|id| conns.remove(&id)) {
            Some(c) => {
                c.close.notify_one();
                metrics::counter!("veritrail_connections_closed_total", "reason" => "evicted")
                    .increment(1);
                true
            }
            None => false,
        }
    }

    /// Closes every connection idle longer than `idle`.
    fn reap(&self, idle: Duration) {
        let cutoff = self.now_ms().saturating_sub(idle.as_millis() as u64);
        for c in self.lock().values() {
            if c.busy.load(Ordering::Acquire) == 0
                && c.last_active_ms.load(Ordering::Relaxed) < cutoff
            {
                c.close.notify_one();
                metrics::counter!("veritrail_connections_closed_total", "reason" => "idle")
                    .increment(1);
            }
        }
    }
}

/// Counts one request of a connection as in progress until dropped.
struct InFlight {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl InFlight {
    fn new(conn: Arc<Conn>, registry: Arc<Registry>) -> InFlight {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        conn.last_active_ms
            .store(registry.now_ms(), Ordering::Relaxed);
        InFlight { conn, registry }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn
            .last_active_ms
            .store(self.registry.now_ms(), Ordering::Relaxed);
        self.conn.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in progress until it is sent.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` resolves, then
/// lets open connections finish (at most 30 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let registry = Arc::new(Registry {
        started: Instant::now(),
        conns: Mutex::new(HashMap::new()),
    });
    let reaper = {
        let (registry, idle) = (registry.clone(), limits.idle_timeout);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1).min(idle));
            loop {
                tick.tick().await;
                registry.reap(idle);
            }
        })
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, say: make room, and do not spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                if !registry.evict_one() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let open = registry.lock().len();
        if open >= limits.max_connections && !registry.evict_one() {
            // Every connection has a request in progress: this one waits for none of them.
            metrics::counter!("veritrail_connections_closed_total", "reason" => "full")
                .increment(1);
            drop(tcp);
            continue;
        }
        next_id += 1;
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(registry.now_ms()),
            close: Notify::new(),
        });
        let open = {
            let mut conns = registry.lock();
            conns.insert(next_id, conn.clone());
            conns.len()
        };
        metrics::gauge!("veritrail_connections_open").set(open as f64);
        let (id, registry, app, tls, stop) = (
            next_id,
            registry.clone(),
            app.clone(),
            tls.clone(),
            stop_rx.clone(),
        );
        let header_timeout = limits.header_timeout;
        tasks.spawn(async move {
            let _ = tcp.set_nodelay(true);
            let closed = conn.clone();
            let served = async {
                match tls {
                    None => {
                        serve_one(
                            tcp,
                            None,
                            remote,
                            app,
                            &conn,
                            &registry,
                            header_timeout,
                            stop,
                        )
                        .await
                    }
                    Some(acceptor) => {
                        let tls =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                                .await
                            {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(e)) => {
                                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => return,
                            };
                        let cert = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| ClientCert(fingerprint(c)));
                        serve_one(
                            tls,
                            cert,
                            remote,
                            app,
                            &conn,
                            &registry,
                            header_timeout,
                            stop,
                        )
                        .await
                    }
                }
            };
            tokio::select! {
                () = served => {}
                () = closed.close.notified() => {}
            }
            let open = {
                let mut conns = registry.lock();
                conns.remove(&id);
                conns.len()
            };
            metrics::gauge!("veritrail_connections_open").set(open as f64);
        });
        // Reap finished connection tasks so the set does not grow with every client.
        while tasks.try_join_next().is_some() {}
    }
    reaper.abort();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Serves HTTP/1.1 on one connection until it closes or the server stops.
#[allow(clippy::too_many_arguments)]
async fn serve_one<S>(
    io: S,
    cert: Option<ClientCert>,
    remote: SocketAddr,
    app: Router,
    conn: &Arc<Conn>,
    registry: &Arc<Registry>,
    header_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (conn, registry) = (conn.clone(), registry.clone());
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let in_flight = InFlight::new(conn.clone(), registry.clone());
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(remote));
        if let Some(c) = &cert {
            req.extensions_mut().insert(c.clone());
        }
        let app = app.clone();
        async move {
            let response = app.oneshot(req).await?;
            Ok::<_, std::convert::Infallible>(response.map(|inner| {
                Body::new(Tracked {
                    inner,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // Room above the limits `crate::limits` enforces, so that it, not the parser, answers
        // an oversized request with a problem document.
        .max_buf_size(1 << 20)
        .max_headers(256)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
