package kubetest

import (
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// tokenSeconds is the token lifetime; TokenRequest rejects less than 600 s.
const tokenSeconds = 3600

// Token returns a token of ServiceAccount serviceAccount in namespace, creating both when they
// do not exist (with no permissions: grant them with RBAC objects). With boundNode set the token
// is bound to that Node, which must exist: the apiserver then adds
// authentication.kubernetes.io/node-name and node-uid to the user's extra, as for the token of a
// Pod on that node, and rejects the token once the Node is gone (after up to 10 s, for the
// apiserver caches successful token authentications that long).
func (c *Cluster) Token(t testing.TB, namespace, serviceAccount, boundNode string) string {
	t.Helper()
	ctx := t.Context()
	cs := c.Client(t)
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %q: %v", namespace, err)
	}
	_, err = cs.CoreV1().ServiceAccounts(namespace).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: serviceAccount}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create serviceaccount %s/%s: %v", namespace, serviceAccount, err)
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(tokenSeconds))}}
	if boundNode != "" {
		node, err := cs.CoreV1().Nodes().Get(ctx, boundNode, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get node %q to bind a token to: %v", boundNode, err)
		}
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: node.Name, UID: node.UID}
	}
	resp, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("request token for %s/%s: %v", namespace, serviceAccount, err)
	}
	return resp.Status.Token
}
