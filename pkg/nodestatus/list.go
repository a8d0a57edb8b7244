package nodestatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
)

// NodeInfo is what the cluster plan reads of one Node.
type NodeInfo struct {
	Name        string
	InternalIPs []netip.Addr
	// ControlPlane is set for nodes labelled node-role.kubernetes.io/control-plane (or the
	// older node-role.kubernetes.io/master).
	ControlPlane bool
	// Report is the calico-prep.io/report annotation; empty when the node has none.
	Report string
}

// listedNode is the part of a Node that ListNodes decodes. Every other field, however large
// (status.images, managedFields, other annotations), is skipped by the decoder unread into memory.
type listedNode struct {
	Metadata struct {
		Name   string `json:"name"`
		Labels struct {
			ControlPlane *string `json:"node-role.kubernetes.io/control-plane"`
			Master       *string `json:"node-role.kubernetes.io/master"`
		} `json:"labels"`
		Annotations struct {
			Report string `json:"calico-prep.io/report"`
		} `json:"annotations"`
	} `json:"metadata"`
	Status struct {
		Addresses []nodeAddress `json:"addresses"`
	} `json:"status"`
}

// ListNodes lists every Node in pages of limit and calls fn for each in the order the API
// server returns them. Each page is decoded as a stream, one node at a time, keeping only the
// fields of NodeInfo, so memory stays flat whatever the cluster size. A continue token that
// expires between pages (410 Gone, after etcd compaction) ends the list with an error: the
// caller has already consumed the first pages and must start again.
func (c *Client) ListNodes(ctx context.Context, limit int64, fn func(NodeInfo) error) error {
	token := ""
	for {
		req := c.rc.Get().Resource("nodes").Param("limit", strconv.FormatInt(limit, 10))
		if token != "" {
			req = req.Param("continue", token)
		}
		stream, err := req.Stream(ctx)
		if err != nil {
			return fmt.Errorf("list nodes: %w", err)
		}
		token, err = decodeNodeList(stream, fn)
		if err == nil {
			// The rest is white space; reading it lets the connection be reused instead of
			// the request being aborted.
			_, err = io.Copy(io.Discard, stream)
		}
		if cerr := stream.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("list nodes: %w", err)
		}
		if token == "" {
			return nil
		}
	}
}

// decodeNodeList reads one NodeList page, calling fn per item, and returns its continue token.
func decodeNodeList(r io.Reader, fn func(NodeInfo) error) (token string, err error) {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return "", err
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return "", fmt.Errorf("decode node list: %w", err)
		}
		switch key {
		case "metadata":
			var meta struct {
				Continue string `json:"continue"`
			}
			if err := dec.Decode(&meta); err != nil {
				return "", fmt.Errorf("decode node list metadata: %w", err)
			}
			token = meta.Continue
		case "items":
			if err := decodeItems(dec, fn); err != nil {
				return "", err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return "", fmt.Errorf("decode node list: %w", err)
			}
		}
	}
	return token, expectDelim(dec, '}')
}

func decodeItems(dec *json.Decoder, fn func(NodeInfo) error) error {
	// "items": null is how an empty list may come.
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("decode node list items: %w", err)
	}
	if tok == nil {
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return fmt.Errorf("decode node list items: got %v, want an array", tok)
	}
	for dec.More() {
		var n listedNode
		if err := dec.Decode(&n); err != nil {
			return fmt.Errorf("decode node: %w", err)
		}
		info := NodeInfo{
			Name:         n.Metadata.Name,
			InternalIPs:  internalIPs(n.Status.Addresses),
			ControlPlane: n.Metadata.Labels.ControlPlane != nil || n.Metadata.Labels.Master != nil,
			Report:       n.Metadata.Annotations.Report,
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return expectDelim(dec, ']')
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("decode node list: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("decode node list: got %v, want %q", tok, want)
	}
	return nil
}
