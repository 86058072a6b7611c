package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"
)

// Validator is a request that checks its own fields. Handle calls Validate
// after decoding and answers 400 with its error, which should name the
// field and the accepted range.
type Validator interface {
	Validate() error
}

// LongPoll is a request that may legitimately keep its connection for
// longer than RequestTimeout (`rotate --wait`). ResponseWithin says how
// long its answer may take; 0 means the usual bound.
type LongPoll interface {
	ResponseWithin() time.Duration
}

// Handle adapts a JSON function to http: it decodes the request body into
// In strictly (at most MaxBodyBytes, one JSON value, no unknown field, no
// trailing data), validates it (Validator), and calls f with a context that
// ends at the request's deadline (RequestTimeout, or a LongPoll's wait plus
// LongPollMargin). It answers 400 for a bad request, 413 for an oversize
// body, 415 for a body that is not JSON, 503 when f ran out of time, 422
// for any other error of f.
func Handle[In, Out any](f func(context.Context, In) (Out, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in In
		if status, err := decodeRequest(w, r, &in); err != nil {
			writeJSON(w, status, Error{Message: err.Error()})
			return
		}
		markServing(r.Context())
		lim := limitsFrom(r.Context())
		limit := lim.request
		if lp, ok := any(in).(LongPoll); ok {
			if d := lp.ResponseWithin(); d > 0 {
				limit = d + lim.longPollMargin
			}
		}
		ctx, cancel := requestDeadline(w, r, limit)
		defer cancel()
		out, err := f(ctx, in)
		switch {
		case err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()):
			writeJSON(w, http.StatusServiceUnavailable, Error{Message: fmt.Sprintf("the agent did not handle the request within %s (its loop is busy or stuck; see its log)", limit)})
		case err != nil:
			writeJSON(w, http.StatusUnprocessableEntity, Error{Message: err.Error()})
		default:
			writeJSON(w, http.StatusOK, out)
		}
	}
}

// answerGrace is the time left to write an answer after the handler's
// context ended.
const answerGrace = time.Second

// requestDeadline returns the request's context, ending after limit, and
// moves the connection's read and write deadlines to answerGrace after
// that: neither http.Server's ReadTimeout (whose expiry, during a long poll,
// would cancel the request's context) nor its WriteTimeout cuts the answer,
// and a handler that ran out of time can still say so.
func requestDeadline(w http.ResponseWriter, r *http.Request, limit time.Duration) (context.Context, context.CancelFunc) {
	dl := time.Now().Add(limit)
	rc := http.NewResponseController(w)
	// Not supported only by writers that are not a connection (tests).
	_ = rc.SetReadDeadline(dl.Add(answerGrace))
	_ = rc.SetWriteDeadline(dl.Add(answerGrace))
	return context.WithDeadline(r.Context(), dl)
}

// decodeRequest decodes r's body into in and validates it; it returns the
// HTTP status to answer with when it refuses. An empty body is the zero
// value.
func decodeRequest(w http.ResponseWriter, r *http.Request, in any) (int, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" && r.ContentLength != 0 {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return http.StatusUnsupportedMediaType, fmt.Errorf("bad request: content type %q: send application/json", ct)
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(in)
	if errors.Is(err, io.EOF) {
		return validate(in) // no body
	}
	if err == nil {
		// One value, then only white space.
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.New("data after the JSON value")
			var mb *http.MaxBytesError
			if errors.As(terr, &mb) {
				err = terr
			}
		}
	}
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return http.StatusRequestEntityTooLarge, fmt.Errorf("bad request: body larger than %d bytes", mb.Limit)
	}
	if err != nil {
		return http.StatusBadRequest, fmt.Errorf("bad request: %w", err)
	}
	return validate(in)
}

func validate(in any) (int, error) {
	if v, ok := in.(Validator); ok {
		if err := v.Validate(); err != nil {
			return http.StatusBadRequest, fmt.Errorf("bad request: %w", err)
		}
	}
	return 0, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
