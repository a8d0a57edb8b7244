package kubetest

import (
	"bufio"
	"encoding/json"
	"os"
	"slices"
	"testing"
	"time"
)

// auditPolicy records every request at level Metadata except the apiserver's own loopback
// traffic and health probes, which would drown what tests look for.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  users: ["system:apiserver"]
- level: None
  nonResourceURLs: ["/healthz*", "/livez*", "/readyz*"]
- level: Metadata
`

// AuditEvent is one audit log entry. Most requests have one, at stage ResponseComplete; a watch
// or other long-running request has one at ResponseStarted and one more when it ends.
type AuditEvent struct {
	AuditID     string
	Stage       string
	Time        time.Time // stage timestamp
	User        string
	UserAgent   string
	Verb        string // get, list, watch, create, update, patch, delete, deletecollection
	RequestURI  string
	APIGroup    string // "" for the core group
	Resource    string
	Subresource string
	Namespace   string
	Name        string
	Code        int // HTTP status of the response
}

// IsWrite reports whether the request would change something.
func (e AuditEvent) IsWrite() bool {
	return slices.Contains([]string{"create", "update", "patch", "delete", "deletecollection"}, e.Verb)
}

// auditLine is the subset of audit.k8s.io/v1 Event that AuditEvent carries.
type auditLine struct {
	AuditID        string    `json:"auditID"`
	Stage          string    `json:"stage"`
	StageTimestamp time.Time `json:"stageTimestamp"`
	RequestURI     string    `json:"requestURI"`
	Verb           string    `json:"verb"`
	UserAgent      string    `json:"userAgent"`
	User           struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		APIGroup    string `json:"apiGroup"`
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// AuditEvents returns the audit events of one user, oldest first. The log is written before each
// response is sent, so it holds every request that has returned to the test.
func (c *Cluster) AuditEvents(t testing.TB, username string) []AuditEvent {
	t.Helper()
	f, err := os.Open(c.AuditLog)
	if err != nil {
		t.Fatalf("open audit log: %v", err)
	}
	defer func() { _ = f.Close() }()
	var events []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var l auditLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("parse audit log %q: %v", c.AuditLog, err)
		}
		if l.User.Username != username {
			continue
		}
		e := AuditEvent{
			AuditID:    l.AuditID,
			Stage:      l.Stage,
			Time:       l.StageTimestamp,
			User:       l.User.Username,
			UserAgent:  l.UserAgent,
			Verb:       l.Verb,
			RequestURI: l.RequestURI,
		}
		if r := l.ObjectRef; r != nil {
			e.APIGroup, e.Resource, e.Subresource, e.Namespace, e.Name = r.APIGroup, r.Resource, r.Subresource, r.Namespace, r.Name
		}
		if l.ResponseStatus != nil {
			e.Code = l.ResponseStatus.Code
		}
		events = append(events, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read audit log %q: %v", c.AuditLog, err)
	}
	return events
}
