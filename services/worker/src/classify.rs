//! What an attempt's result means for the delivery: a pure function of the
//! HTTP status (or the failure to get one).

/// How an attempt ended, as far as the HTTP exchange goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Status(u16),
    Timeout,
    /// Connection refused or reset, DNS failure, TLS error, and the like.
    Failed(String),
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// 410 Gone: the receiver asks us to stop; the endpoint is to be disabled.
    Gone,
    /// The receiver is overloaded (429, 502, 503, 504, timeout): retry, and
    /// back off harder.
    Overloaded,
    /// Any other failure: retry per the schedule.
    Failed,
}

pub fn classify(response: &Response) -> Verdict {
    match response {
        Response::Status(200..=299) => Verdict::Delivered,
        Response::Status(410) => Verdict::Gone,
        Response::Status(429 | 502 | 503 | 504) | Response::Timeout => Verdict::Overloaded,
        Response::Status(_) | Response::Failed(_) => Verdict::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_receivers_expect() {
        for ok in [200, 201, 204, 299] {
            assert_eq!(classify(&Response::Status(ok)), Verdict::Delivered);
        }
        assert_eq!(classify(&Response::Status(410)), Verdict::Gone);
        for busy in [429, 502, 503, 504] {
            assert_eq!(classify(&Response::Status(busy)), Verdict::Overloaded);
        }
        assert_eq!(classify(&Response::Timeout), Verdict::Overloaded);
        // Redirects are not followed: a 3xx is a failure.
        for failed in [301, 302, 400, 404, 500] {
            assert_eq!(classify(&Response::Status(failed)), Verdict::Failed);
        }
        assert_eq!(
            classify(&Response::Failed("connection refused".into())),
            Verdict::Failed
        );
    }
}
