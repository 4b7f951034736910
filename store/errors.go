// Package store is the data plane of ecfs: the shard server (disk layout,
// atomic writes, bitrot checks, listing, scrub), its HTTP client, and the
// object layer that writes an object as k+m shards across a given placement
// and reads any byte range of it back, reconstructing around dead, slow or
// corrupt stores. It knows nothing of files, inodes or Raft.
package store

import (
	"errors"
	"fmt"
	"net/http"
)

// Sentinel errors. Errors from the server and the client wrap one of them, so
// callers test with errors.Is whichever side of the network they are on.
var (
	ErrInvalidArgument   = errors.New("invalid argument")
	ErrUnauthenticated   = errors.New("unauthenticated")
	ErrNotFound          = errors.New("shard not found")
	ErrDataLoss          = errors.New("data loss")
	ErrResourceExhausted = errors.New("resource exhausted")
	ErrUnavailable       = errors.New("store unavailable")
	ErrWriteQuorum       = errors.New("write quorum not reached")
	ErrUnplaced          = errors.New("shard has no store")
)

// Code is the name of an error class on the wire (header X-Ecfs-Code).
type Code string

// Wire codes and the HTTP status each travels with.
const (
	CodeInvalidArgument   Code = "InvalidArgument"
	CodeUnauthenticated   Code = "Unauthenticated"
	CodeNotFound          Code = "NotFound"
	CodeDataLoss          Code = "DataLoss"
	CodeResourceExhausted Code = "ResourceExhausted"
	CodeTooLarge          Code = "TooLarge"
	CodeInternal          Code = "Internal"
	// CodeUnavailable is not sent by a store: a client's word for a store
	// it did not reach (Client's Observe).
	CodeUnavailable Code = "Unavailable"
)

func (c Code) status() int {
	switch c {
	case CodeInvalidArgument:
		return http.StatusBadRequest
	case CodeUnauthenticated:
		return http.StatusUnauthorized
	case CodeNotFound:
		return http.StatusNotFound
	case CodeDataLoss:
		return http.StatusUnprocessableEntity
	case CodeResourceExhausted:
		return http.StatusInsufficientStorage
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusInternalServerError
}

func (c Code) sentinel() error {
	switch c {
	case CodeInvalidArgument, CodeTooLarge:
		return ErrInvalidArgument
	case CodeUnauthenticated:
		return ErrUnauthenticated
	case CodeNotFound:
		return ErrNotFound
	case CodeDataLoss:
		return ErrDataLoss
	case CodeResourceExhausted:
		return ErrResourceExhausted
	}
	return ErrUnavailable
}

// codeOf classifies an error of this package for the wire.
func codeOf(err error) Code {
	switch {
	case errors.Is(err, errTooLarge): // before ErrInvalidArgument, which it wraps
		return CodeTooLarge
	case errors.Is(err, ErrInvalidArgument):
		return CodeInvalidArgument
	case errors.Is(err, ErrUnauthenticated):
		return CodeUnauthenticated
	case errors.Is(err, ErrNotFound):
		return CodeNotFound
	case errors.Is(err, ErrDataLoss):
		return CodeDataLoss
	case errors.Is(err, ErrResourceExhausted):
		return CodeResourceExhausted
	}
	return CodeInternal
}

// RemoteError is an error answered by a store.
type RemoteError struct {
	Addr    string // the store's address
	Code    Code
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("store %s: %s: %s", e.Addr, e.Code, e.Message)
}

// Unwrap returns the sentinel matching the code.
func (e *RemoteError) Unwrap() error { return e.Code.sentinel() }

// ShardResult is the outcome of one shard of an object write or read.
type ShardResult struct {
	Index int
	Addr  string
	Err   error // nil: the shard was written (or read) and verified
}

// WriteError is returned when fewer shards than the write quorum were stored.
type WriteError struct {
	Object  ObjectID
	Quorum  int
	Results []ShardResult
}

func (e *WriteError) Error() string {
	ok := 0
	for _, r := range e.Results {
		if r.Err == nil {
			ok++
		}
	}
	return fmt.Sprintf("object %s: %d of %d shards written, write quorum is %d: %v", e.Object, ok, len(e.Results), e.Quorum, firstErrors(e.Results))
}

func (e *WriteError) Unwrap() error { return ErrWriteQuorum }

// ReadError is returned when fewer than k good shards could be read for some
// part of a range: the data cannot be given back now. It wraps ErrDataLoss.
type ReadError struct {
	Object ObjectID
	Need   int
	Good   int
	Failed []ShardResult
}

func (e *ReadError) Error() string {
	return fmt.Sprintf("object %s: %d good shards, need %d: %v", e.Object, e.Good, e.Need, firstErrors(e.Failed))
}

func (e *ReadError) Unwrap() error { return ErrDataLoss }

func firstErrors(rs []ShardResult) string {
	s := ""
	for _, r := range rs {
		if r.Err == nil {
			continue
		}
		if s != "" {
			s += "; "
		}
		s += fmt.Sprintf("shard %d: %v", r.Index, r.Err)
	}
	return s
}
