// Package kubeclient makes the agent's REST clients for the API server: client-go's REST client
// over plain JSON bodies of the agent's own small types, without the typed clientset.
package kubeclient

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
)

// New returns a REST client rooted at /api/v1 (other groups by AbsPath). Only metav1.Status
// is decoded by the client (for typed API errors); callers decode bodies as plain JSON. A
// config without a rate limit gets 5 requests a second, bursts of 10.
func New(cfg *rest.Config) (*rest.RESTClient, error) {
	c := rest.CopyConfig(cfg)
	c.APIPath = "/api"
	c.GroupVersion = &schema.GroupVersion{Version: "v1"}
	scheme := runtime.NewScheme()
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	c.UserAgent = "calico-prep"
	if c.QPS == 0 {
		c.QPS, c.Burst = 5, 10
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("create API client for %q: %w", cfg.Host, err)
	}
	return rc, nil
}
