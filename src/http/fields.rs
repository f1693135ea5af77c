//! The fields of a query string or a posted form, read with axum's `Query` and
//! `Form`. A query string or body that holds none of them reads as empty, so
//! that the page can say what is missing (a link without its token) in the
//! visitor's language rather than axum's plain-text rejection; a body too large
//! is still refused (413).

use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::Form;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// A form's fields in the order posted, repeated keys kept (ticked sections).
pub type Fields = Vec<(String, String)>;

/// The `token` of a signed link or of the form that carries it on.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct TokenField {
    pub token: Option<String>,
}

/// A posted form, read as `application/x-www-form-urlencoded` whatever the
/// request's Content-Type says (a one-click unsubscribe may come as
/// multipart/form-data, with its token in the query string: its body then holds
/// no field we read); fields that do not read as `T` give `T::default()`.
#[derive(Debug)]
pub struct Posted<T>(pub T);

impl<T, S> FromRequest<S> for Posted<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = FormRejection;

    async fn from_request(mut req: Request, state: &S) -> Result<Self, Self::Rejection> {
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        match Form::<T>::from_request(req, state).await {
            Ok(Form(v)) => Ok(Posted(v)),
            Err(FormRejection::BytesRejection(too_large_or_cut)) => {
                Err(FormRejection::BytesRejection(too_large_or_cut))
            }
            Err(_) => Ok(Posted(T::default())),
        }
    }
}

/// The query string's fields; none, or fields that do not read as `T`, give
/// `T::default()`.
#[derive(Debug)]
pub struct Queried<T>(pub T);

impl<T, S> FromRequestParts<S> for Queried<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Queried(queried(&parts.uri)))
    }
}

/// The fields of `uri`'s query string as `T` (default when they do not read).
pub fn queried<T: DeserializeOwned + Default>(uri: &axum::http::Uri) -> T {
    Query::<T>::try_from_uri(uri)
        .map(|Query(v)| v)
        .unwrap_or_default()
}

/// What a handler gets for `body` posted as a form, and for a query string:
/// the extractors themselves, run outside a server.
#[cfg(test)]
pub mod testing {
    use axum::body::Body;
    use axum::http::Request;

    use super::*;

    pub fn posted<T: DeserializeOwned + Default>(body: &[u8]) -> T {
        let req = Request::post("/")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body.to_vec()))
            .unwrap();
        let Posted(v) = futures::executor::block_on(Posted::<T>::from_request(req, &()))
            .expect("a small form body is read");
        v
    }

    pub fn query<T: DeserializeOwned + Default>(query: &str) -> T {
        queried(&format!("/?{query}").parse().unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{posted, query};
    use super::*;

    #[test]
    fn fields_keep_their_order_and_repeats_whatever_the_content_type_says() {
        let f: Fields = posted(b"a=1&b=x%2By&a=%C3%A9");
        assert_eq!(
            f,
            [("a", "1"), ("b", "x+y"), ("a", "é")].map(|(k, v)| (k.into(), v.into()))
        );
        let t: TokenField = query("token=abc&lang=fr");
        assert_eq!(t.token.as_deref(), Some("abc"));
        let t: TokenField = query("token=a&token=b");
        assert_eq!(t.token, None, "an ambiguous link has no token");
        let req = Request::post("/")
            .header("content-type", "text/plain")
            .body(axum::body::Body::from("token=abc"))
            .unwrap();
        let Posted(t) =
            futures::executor::block_on(Posted::<TokenField>::from_request(req, &())).unwrap();
        assert_eq!(t.token.as_deref(), Some("abc"));
    }
}
