//! The service's pages in a real headless browser (Debian's chromium).
#[path = "support/browser.rs"]
mod browser;

use axum::routing::get;

#[tokio::test(flavor = "multi_thread")]
async fn smoke_devtools_click() {
    let Some(bin) = browser::chromium() else {
        eprintln!("skipped: chromium is not installed");
        return;
    };
    let app = axum::Router::new()
        .route(
            "/",
            get(|| async {
                axum::response::Html(
                    "<form method=post action=/done><button id=b>Go</button></form>",
                )
            }),
        )
        .route(
            "/done",
            axum::routing::post(|| async { axum::response::Html("<p>clicked!</p>") }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    tokio::task::spawn_blocking(move || {
        let mut b = browser::Browser::start(&bin);
        b.goto(&format!("http://{addr}/"));
        b.click("#b");
        b.wait_for("document.body && document.body.innerText.includes('clicked!')");
        b.screenshot(std::path::Path::new("/tmp/smoke.png"));
    })
    .await
    .unwrap();
}
