//! Limit/offset pagination with a bounded page size and the total count.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;
/// Offsets past this are refused: deep offset scans are slow, and no UI pages that far.
pub const MAX_OFFSET: u64 = 1_000_000;

/// Query parameters as a client sends them.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Items to skip (default 0, at most 1,000,000).
    #[param(maximum = 1_000_000)]
    pub offset: Option<u64>,
}

/// A page request whose bounds have been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    limit: u32,
    offset: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageError {
    #[error("limit must be between 1 and {MAX_LIMIT}")]
    Limit,
    #[error("offset must be at most {MAX_OFFSET}")]
    Offset,
}

impl PageRequest {
    pub fn parse(query: PageQuery) -> Result<Self, PageError> {
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(PageError::Limit);
        }
        let offset = query.offset.unwrap_or(0);
        if offset > MAX_OFFSET {
            return Err(PageError::Offset);
        }
        Ok(Self { limit, offset })
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Values ready to bind to `LIMIT $n OFFSET $m` in PostgreSQL.
    pub fn sql(&self) -> (i64, i64) {
        (i64::from(self.limit), self.offset as i64)
    }

    pub fn into_page<T>(self, items: Vec<T>, total: i64) -> Page<T> {
        Page {
            items,
            total: total.max(0) as u64,
            limit: self.limit,
            offset: self.offset,
        }
    }
}

impl PageError {
    /// The query parameter at fault.
    pub fn field(&self) -> &'static str {
        match self {
            PageError::Limit => "limit",
            PageError::Offset => "offset",
        }
    }
}

impl From<PageError> for crate::problem::Problem {
    fn from(e: PageError) -> Self {
        crate::problem::validation(vec![(e.field(), e.to_string())])
    }
}

/// One page of results.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Matching items across all pages.
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let p = PageRequest::parse(PageQuery::default()).unwrap();
        assert_eq!((p.limit(), p.offset()), (DEFAULT_LIMIT, 0));
        assert_eq!(
            PageRequest::parse(PageQuery {
                limit: Some(0),
                offset: None
            }),
            Err(PageError::Limit)
        );
        assert_eq!(
            PageRequest::parse(PageQuery {
                limit: Some(101),
                offset: None
            }),
            Err(PageError::Limit)
        );
        assert_eq!(
            PageRequest::parse(PageQuery {
                limit: None,
                offset: Some(MAX_OFFSET + 1)
            }),
            Err(PageError::Offset)
        );
    }
}
