package kernel

import "bytes"

// parseConfig reads a kernel .config: "CONFIG_FOO=y" lines and "# CONFIG_FOO is not set"
// comments, keyed by the symbol without its CONFIG_ prefix. "is not set" is kept as "n" because it
// is an answer, unlike a symbol the config does not mention. Anything else is ignored, so a
// truncated or foreign file gives fewer answers, never an error.
func parseConfig(data []byte, keep func(sym string) bool) map[string]string {
	cfg := map[string]string{}
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		line = bytes.TrimSpace(line)
		if rest, ok := bytes.CutPrefix(line, []byte("# CONFIG_")); ok {
			if sym, ok := bytes.CutSuffix(rest, []byte(" is not set")); ok && validSymbol(sym) && (keep == nil || keep(string(sym))) {
				cfg[string(sym)] = "n"
			}
			continue
		}
		rest, ok := bytes.CutPrefix(line, []byte("CONFIG_"))
		if !ok {
			continue
		}
		if sym, val, ok := bytes.Cut(rest, []byte("=")); ok && validSymbol(sym) && (keep == nil || keep(string(sym))) {
			cfg[string(sym)] = tristate(val)
		}
	}
	return cfg
}

// tristate returns the common values without allocating; others are copied.
func tristate(val []byte) string {
	switch string(val) {
	case "y":
		return "y"
	case "m":
		return "m"
	}
	return string(val)
}

func validSymbol(s []byte) bool {
	if len(s) == 0 {
		return false
	}
	for _, r := range s {
		if (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' {
			return false
		}
	}
	return true
}

// decidingSymbol returns the first of syms the config mentions, set or not: when a kernel
// renames the symbol that builds a module, the newer symbol is listed first and its "is not set"
// must win over the older symbol still being set.
func decidingSymbol(cfg map[string]string, syms []string) (sym, val string, found bool) {
	for _, s := range syms {
		if v, ok := cfg[s]; ok {
			return s, v, true
		}
	}
	return syms[len(syms)-1], "", false
}

// configSymbols returns the Kconfig symbols that build a module, newest first. They come from
// the kernel's Makefiles (net/netfilter/Makefile, net/ipv4/netfilter/Makefile,
// net/ipv6/netfilter/Makefile, net/ipv4/Makefile, drivers/net/Makefile), not from calicoctl
// node checksystem's table, several of whose symbols build a different module: it maps
// ipt_REJECT to CONFIG_NFT_REJECT (nft_reject), xt_bpf to CONFIG_BPF (the syscall), xt_mark to
// CONFIG_IP_NF_TARGET_MARK (an old alias) and ipt_set to CONFIG_NET_EMATCH_IPSET (a tc ematch).
func configSymbols(key string) []string {
	switch key {
	case "ip_set":
		return []string{"IP_SET"}
	case "ip_tables":
		// Since "netfilter: xtables: allow xtables-nft only builds" (upstream a9525c7f6219,
		// also backported to stable kernels such as 5.15) ip_tables.o is built by
		// IP_NF_IPTABLES_LEGACY; IP_NF_IPTABLES may still be set on a kernel without it.
		return []string{"IP_NF_IPTABLES_LEGACY", "IP_NF_IPTABLES"}
	case "ip6_tables":
		return []string{"IP6_NF_IPTABLES_LEGACY", "IP6_NF_IPTABLES"}
	case "nf_tables":
		return []string{"NF_TABLES"}
	case "xt_set":
		return []string{"NETFILTER_XT_SET"}
	case "ipt_rpfilter", "xt_rpfilter":
		return []string{"IP_NF_MATCH_RPFILTER"}
	case "ip6t_rpfilter":
		return []string{"IP6_NF_MATCH_RPFILTER"}
	case "xt_addrtype":
		return []string{"NETFILTER_XT_MATCH_ADDRTYPE"}
	case "xt_conntrack":
		return []string{"NETFILTER_XT_MATCH_CONNTRACK"}
	case "xt_mark":
		return []string{"NETFILTER_XT_MARK"}
	case "xt_multiport":
		return []string{"NETFILTER_XT_MATCH_MULTIPORT"}
	case "xt_ipvs", "ipt_ipvs":
		return []string{"NETFILTER_XT_MATCH_IPVS"}
	case "ipt_REJECT":
		return []string{"IP_NF_TARGET_REJECT"}
	case "nf_conntrack_netlink":
		return []string{"NF_CT_NETLINK"}
	case "xt_u32":
		return []string{"NETFILTER_XT_MATCH_U32"}
	case "xt_bpf":
		return []string{"NETFILTER_XT_MATCH_BPF"}
	case "ipip":
		return []string{"NET_IPIP"}
	case "vxlan":
		return []string{"VXLAN"}
	case "wireguard":
		return []string{"WIREGUARD"}
	}
	return nil
}
