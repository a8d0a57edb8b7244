package check

// Fact keys that more than one package relies on: the check packages set them, metrics and the
// node report read them. Other facts are free-form.
const (
	// FactZone, FactRule, FactRuntime and FactPermanent describe one firewalld rule; runtime and
	// permanent are "true" or "false".
	FactZone      = "zone"
	FactRule      = "rule"
	FactRuntime   = "runtime"
	FactPermanent = "permanent"
	// FactLink and FactUp describe one Calico link; up is "true" or "false".
	FactLink = "link"
	FactUp   = "up"
	// FactUnmanagedPrefix followed by a device name is "true" when NetworkManager leaves that
	// Calico device unmanaged.
	FactUnmanagedPrefix = "unmanaged/"
	// FactNetworkdUnmanagedPrefix followed by a link name is "true" when systemd-networkd leaves
	// that Calico link unmanaged.
	FactNetworkdUnmanagedPrefix = "networkd-unmanaged/"
)
