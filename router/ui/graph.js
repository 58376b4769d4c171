// The mesh as a graph: routers on a circle, connections between them,
// coloured by overlay. This router knows its own connections first hand;
// every router gossips how its own are (the links channel), so the others
// are drawn as their ends report them, and grey until one has.

// A namespace name, never fetched.
const SVG = 'http://www.w3.org/2000/svg'

export const LEGEND = [
    ['overlay-fastdp', 'fast datapath (kernel Open vSwitch)'],
    ['overlay-vxlan', 'kernel vxlan device'],
    ['overlay-userspace', 'userspace (encrypted with a password)'],
    ['failed', 'no data path: click for the reason'],
    ['remote', 'not reported yet by either end'],
]

function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG, tag)
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v)
    node.append(...children)
    return node
}

// Every connection once, whoever reported it; ours with their details.
export function edgesOf(report) {
    const me = report.router.name
    const nick = new Map(report.peers.map(p => [p.name, p.nickname]))
    nick.set(me, report.router.nickname)
    const edges = new Map()
    // The one edge between two routers, whichever end names it.
    const between = (x, y) => {
        const [a, b] = [x, y].sort()
        const key = `${a}|${b}`
        if (!edges.has(key)) edges.set(key, { key, a, b, established: false, local: null, said: [] })
        return edges.get(key)
    }
    for (const p of report.peers) {
        for (const c of p.connections) {
            if (!nick.has(c.peer)) continue
            const edge = between(p.name, c.peer)
            edge.established ||= c.established
            // What this end says of its own connection, if it has said.
            if (c.overlay || c.reason || c.mtu) {
                edge.said.push({ by: p.nickname, overlay: c.overlay ?? null, reason: c.reason ?? null, mtu: c.mtu ?? null, encrypted: c.encrypted })
            }
        }
    }
    for (const c of report.connections) {
        if (!c.peer || !nick.has(c.peer) || c.peer === me) continue
        between(me, c.peer).local = c
    }
    for (const e of edges.values()) {
        e.names = [nick.get(e.a), nick.get(e.b)].sort()
        if (e.local) {
            e.overlay = e.local.overlay ?? 'none'
            e.cls = e.local.overlay ? `overlay-${e.local.overlay}` : 'failed'
        } else {
            const carrying = e.said.find(x => x.overlay)
            e.report = carrying ?? e.said[0] ?? null
            e.overlay = carrying ? carrying.overlay : (e.said.length ? 'none' : 'unknown')
            e.cls = carrying ? `overlay-${carrying.overlay}` : (e.said.length ? 'failed' : 'remote')
        }
    }
    return [...edges.values()].sort((x, y) => x.names.join().localeCompare(y.names.join()))
}

const yesNo = v => (v === null || v === undefined ? '—' : (v ? 'yes' : 'no'))

function edgeRows(edge) {
    const c = edge.local
    if (!c) {
        const r = edge.report
        if (!r) {
            return [
                ['Between', edge.names.join(' and ')],
                ['Carries data', edge.established ? 'yes (both ends report it)' : 'no'],
                ['Overlay', 'not reported yet'],
            ]
        }
        return [
            ['Between', edge.names.join(' and ')],
            ['Overlay', r.overlay ?? 'none: no data path'],
            ['Reason', r.reason ?? '—'],
            ['MTU', r.mtu ?? '—'],
            ['Encrypted', yesNo(r.encrypted)],
            ['As reported by', edge.said.map(x => x.by).join(' and ')],
        ]
    }
    return [
        ['Between', edge.names.join(' and ')],
        ['Address', c.address],
        ['State', c.state],
        ['Overlay', c.overlay ?? 'none: no data path'],
        ['Reason', c.reason ?? '—'],
        ['Advice', c.advice ?? '—'],
        ['MTU', c.mtu ?? '—'],
        ['Encrypted', yesNo(c.encrypted)],
        ['Direction', c.outbound ? 'we connected' : 'they connected'],
    ]
}

// Draws again only when something shown changed, so a tooltip or a
// click is not lost to a redraw every second.
let drawnFrom = ''

export function renderGraph(root, report, select) {
    const signature = JSON.stringify([report.router.name, report.peers, report.connections])
    if (signature === drawnFrom) return
    drawnFrom = signature
    const me = report.router.name
    const nodes = [{ name: me, nickname: report.router.nickname, uid: report.router.uid },
        ...report.peers.filter(p => p.name !== me)]
        .sort((x, y) => (x.name === me ? -1 : y.name === me ? 1 : x.nickname.localeCompare(y.nickname)))
    const [cx, cy, r] = [300, 210, nodes.length > 1 ? 150 : 0]
    const at = new Map(nodes.map((n, i) => {
        const angle = -Math.PI / 2 + (2 * Math.PI * i) / nodes.length
        return [n.name, [cx + r * Math.cos(angle), cy + r * Math.sin(angle)]]
    }))
    const edges = edgesOf(report)
    const drawn = edges.map(e => {
        const [[x1, y1], [x2, y2]] = [at.get(e.a), at.get(e.b)]
        const r = e.local ?? e.report
        const title = r
            ? `${e.names.join(' ⇄ ')}: ${r.overlay ?? 'no data path'}${r.mtu ? `, MTU ${r.mtu}` : ''}` +
              `${r.reason ? ` (${r.reason})` : ''}`
            : `${e.names.join(' ⇄ ')}: not reported yet`
        const group = svg('g', {
            class: `edge ${e.cls}`, 'data-a': e.names[0], 'data-b': e.names[1],
            'data-overlay': e.overlay, 'data-state': e.local ? e.local.state : (e.established ? 'established' : 'down'),
            'data-source': e.local ? 'ours' : (e.report ? 'gossip' : 'none'),
            tabindex: '0',
        },
        svg('title', {}, title),
        svg('line', { x1, y1, x2, y2, class: 'hit' }),
        svg('line', { x1, y1, x2, y2, class: 'wire' }),
        svg('text', { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 6, class: 'edge-label' },
            r ? (r.overlay ?? 'no data path') : ''))
        const pick = () => select({ title: e.names.join(' ⇄ '), rows: rep => {
            const now = edgesOf(rep).find(x => x.key === e.key)
            return now && edgeRows(now)
        } })
        group.addEventListener('click', pick)
        group.addEventListener('keydown', ev => { if (ev.key === 'Enter') pick() })
        return group
    })
    const circles = nodes.map(n => {
        const [x, y] = at.get(n.name)
        const group = svg('g', { class: n.name === me ? 'node me' : 'node', 'data-name': n.nickname, tabindex: '0' },
            svg('title', {}, `${n.nickname} (${n.name})`),
            svg('circle', { cx: x, cy: y, r: 26 }),
            svg('text', { x, y: y + 5 }, n.nickname))
        group.addEventListener('click', () => select({ title: n.nickname, rows: rep => {
            const peer = rep.peers.find(p => p.name === n.name)
            if (!peer) return null
            return [
                ['Name', peer.name],
                ['Connections', peer.connections.map(c => c.nickname).join(', ') || 'none'],
                ['This router', peer.name === rep.router.name ? 'yes' : 'no'],
            ]
        } }))
        return group
    })
    root.replaceChildren(...drawn, ...circles)
}
