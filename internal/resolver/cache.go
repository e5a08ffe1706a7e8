package resolver

import (
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// maxTTL caps how long an upstream answer is kept; negative answers (no
// such name, no data) are kept at most negTTL.
const (
	maxTTL = 5 * time.Minute
	negTTL = time.Minute
)

// cache keeps upstream answers by question for their TTL (the smallest in
// the answer, capped). It holds at most max entries: when full, expired
// entries go first, then arbitrary ones.
type cache struct {
	mu      sync.Mutex
	max     int
	entries map[string]entry
}

type entry struct {
	msg     *dns.Msg
	stored  time.Time
	expires time.Time
}

func newCache(max int) *cache { return &cache{max: max, entries: map[string]entry{}} }

// cacheKey is a question's name, type and class, and whether DNSSEC
// records were asked for.
func cacheKey(r *dns.Msg) string {
	q := r.Question[0]
	do := "0"
	if o := r.IsEdns0(); o != nil && o.Do() {
		do = "1"
	}
	return strings.ToLower(q.Name) + "/" + dns.TypeToString[q.Qtype] + "/" + dns.ClassToString[q.Qclass] + "/" + do
}

// get returns a copy of the answer for key with its TTLs lowered by its
// age, or nil.
func (c *cache) get(key string, now time.Time) *dns.Msg {
	c.mu.Lock()
	e, ok := c.entries[key]
	if ok && !now.Before(e.expires) {
		delete(c.entries, key)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return nil
	}
	m := e.msg.Copy()
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, rrs := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range rrs {
			if h := rr.Header(); h.Rrtype != dns.TypeOPT {
				h.Ttl -= min(age, h.Ttl)
			}
		}
	}
	return m
}

// put keeps m, an upstream's answer, when it is worth keeping: a success
// or a name that does not exist, for its TTL.
func (c *cache) put(key string, m *dns.Msg, now time.Time) {
	if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
		return
	}
	ttl := ttlOf(m)
	if ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if !now.Before(e.expires) || len(c.entries) >= c.max {
				delete(c.entries, k)
			}
		}
	}
	c.entries[key] = entry{msg: m.Copy(), stored: now, expires: now.Add(ttl)}
}

// ttlOf is how long m may be kept: its answers' smallest TTL, or for an
// empty answer its SOA's (RFC 2308), capped.
func ttlOf(m *dns.Msg) time.Duration {
	limit := maxTTL
	rrs := m.Answer
	if len(rrs) == 0 {
		limit, rrs = negTTL, m.Ns
	}
	if len(rrs) == 0 {
		return 0
	}
	ttl := limit
	for _, rr := range rrs {
		t := time.Duration(rr.Header().Ttl) * time.Second
		if soa, ok := rr.(*dns.SOA); ok && len(m.Answer) == 0 {
			t = min(t, time.Duration(soa.Minttl)*time.Second)
		}
		ttl = min(ttl, t)
	}
	return ttl
}
