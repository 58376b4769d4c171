// weft's page: polls the router's API once a second and draws what it
// says. Reads need nothing on loopback; changes carry the token that
// `weft ui` put in the address's fragment (a fragment never reaches a
// server, and it is taken out of the address bar at once, so a screen
// share or a bookmark does not carry it on).

import { api, canChange, el, change, afterChange, rateText } from './util.js'
import { renderGraph, LEGEND } from './graph.js'
import { ConditionEditor, describeConditions } from './controls.js'

const POLL_MS = 1000

const state = { selected: null, report: null }
const editor = new ConditionEditor(document.querySelector('#condition-editor'))

function renderHeader(report) {
    const r = report.router
    document.querySelector('#router-name').textContent = `${r.nickname} (${r.name})`
    const peers = report.peers.length
    const up = report.connections.filter(c => c.overlay).length
    document.querySelector('#router-summary').textContent =
        `${peers} routers in the mesh · ${up} of ${report.connections.length} connections carrying data · ` +
        `version ${r.version} · up ${r.uptime_seconds} s · encryption ${r.encryption ? 'on' : 'off'}`
}

function renderLegend() {
    const legend = document.querySelector('#legend')
    legend.replaceChildren(...LEGEND.map(([cls, label]) =>
        el('li', {}, el('span', { class: `swatch ${cls}` }), label)))
}

function renderDetails(report) {
    const aside = document.querySelector('#edge-details')
    const sel = state.selected
    if (!sel) return
    const rows = sel.rows(report)
    if (!rows) {
        aside.replaceChildren(el('p', { class: 'hint' }, 'Click a connection or a router for its details.'))
        return
    }
    aside.replaceChildren(
        el('h3', {}, sel.title),
        el('dl', {}, rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', { dataset: { field: k } }, v)])))
}

function renderContainers(containers) {
    const body = document.querySelector('#containers tbody')
    body.replaceChildren(...containers.map(c => {
        const labels = Object.entries(c.labels).map(([k, v]) => `${k}=${v}`)
        const policy = ['ingress', 'egress'].map(way => c.policy[way]
            ? `${way}: ${c.policy[way].join(', ')}` : `${way}: open`)
        const edit = el('button', { type: 'button', disabled: !canChange }, 'Condition…')
        edit.title = canChange ? 'set latency, loss and rate' : 'read-only: open the address `weft ui` prints to change things'
        edit.addEventListener('click', () => editor.open(c))
        return el('tr', { dataset: { id: c.id } },
            el('td', {}, c.id),
            el('td', {}, c.addresses.join(' ')),
            el('td', {}, c.names.join(' ') || '—'),
            el('td', {}, (c.namespace ? `${c.namespace}: ` : '') + (labels.join(' ') || '—')),
            el('td', {}, policy.join('; ')),
            el('td', { class: 'conditions' }, describeConditions(c)),
            el('td', {}, edit))
    }))
    editor.refresh(containers)
}

function renderIpam(ipam) {
    const [, prefix] = ipam.range.split('/')
    const total = 2 ** (32 - Number(prefix))
    const owned = ipam.peers.reduce((n, p) => n + p.addresses, 0)
    document.querySelector('#ipam-summary').textContent =
        `${ipam.range}, ${ipam.state}: ${ipam.peers.length} owners; ${total - owned} addresses not yet claimed`
    const bar = document.querySelector('#ipam-bar')
    const legend = document.querySelector('#ipam-legend')
    // Owners' colours, clear of the red that means trouble on this page.
    const PALETTE = ['#3b7dd8', '#8e5cc4', '#17a589', '#e08a1e', '#34495e', '#6d9f2e', '#b0739a', '#5f8fa8']
    const colour = i => PALETTE[i % PALETTE.length]
    const segments = []
    const items = []
    ipam.peers.forEach((p, i) => {
        const share = p.addresses / total
        const reach = p.reachable ? '' : ' unreachable'
        const label = `${p.nickname}: ${p.addresses} addresses (${(100 * share).toFixed(1)}%), ${p.free} free` +
            (p.reachable ? '' : p.unreachable_secs == null ? ', unreachable' : `, unreachable for ${p.unreachable_secs} s`) +
            (p.removed ? ', removed' : '')
        const seg = el('div', { class: `segment${reach}`, title: label, dataset: { peer: p.nickname } })
        seg.style.flexGrow = String(Math.max(share, 0.004))
        seg.style.backgroundColor = colour(i)
        segments.push(seg)
        const swatch = el('span', { class: `swatch${reach}` })
        swatch.style.backgroundColor = colour(i)
        items.push(el('li', { dataset: { peer: p.nickname } }, swatch, label))
    })
    if (owned < total) {
        const free = el('div', { class: 'segment unclaimed', title: `${total - owned} not yet claimed` })
        free.style.flexGrow = String((total - owned) / total)
        segments.push(free)
    }
    bar.replaceChildren(...segments)
    legend.replaceChildren(...items)
}

function renderFlows(flows) {
    const body = document.querySelector('#flows tbody')
    const rows = []
    for (const c of flows.containers) {
        for (const rule of c.rules) {
            for (const f of rule.flows) {
                const ports = [f.local_port, f.remote_port].some(p => p !== undefined)
                    ? `${f.local_port ?? '*'} → ${f.remote_port ?? '*'}` : ''
                rows.push(el('tr', { dataset: { container: c.id, remote: f.remote } },
                    el('td', {}, c.id), el('td', {}, rule.rule), el('td', {}, f.remote),
                    el('td', {}, { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', 132: 'sctp' }[f.protocol] ?? f.protocol),
                    el('td', {}, ports),
                    el('td', {}, `${rateText(f.inbound.bits_per_second)} · ${Math.round(f.inbound.packets_per_second)} pkt/s`),
                    el('td', {}, `${rateText(f.outbound.bits_per_second)} · ${Math.round(f.outbound.packets_per_second)} pkt/s`)))
            }
        }
    }
    body.replaceChildren(...rows)
    document.querySelector('#flows-summary').textContent = flows.counting
        ? (rows.length ? '' : 'No traffic in the last interval.')
        : (canChange ? 'Starting to count…' : 'Not counting: flow top counts while someone with the token watches (`weft top`, or this page opened from `weft ui`).')
}

function renderTargets(report) {
    const body = document.querySelector('#targets tbody')
    body.replaceChildren(...report.targets.map(t => {
        const forget = el('button', { type: 'button', disabled: !canChange }, 'Forget')
        forget.addEventListener('click', () => change(() => api('POST', '/forget', { peers: [t.address] }), document.querySelector('#connect-error')))
        return el('tr', { dataset: { address: t.address } },
            el('td', {}, t.address), el('td', {}, t.source), el('td', {}, t.state),
            el('td', {}, t.last_error ?? ''), el('td', {}, forget))
    }))
}

function selectEdge(selection) {
    state.selected = selection
    if (state.report) renderDetails(state.report)
}

async function poll() {
    const live = document.querySelector('#live')
    try {
        const [report, containers, ipam, flows] = await Promise.all([
            api('GET', '/report'),
            api('GET', '/containers'),
            api('GET', '/ipam'),
            // Counting costs every frame: only a reader with the token
            // keeps it on.
            canChange ? api('POST', '/flows', {}) : api('GET', '/flows'),
        ])
        state.report = report
        renderHeader(report)
        renderGraph(document.querySelector('#graph'), report, selectEdge)
        renderDetails(report)
        renderContainers(containers)
        renderIpam(ipam)
        renderFlows(flows)
        renderTargets(report)
        live.textContent = `live · ${new Date().toLocaleTimeString()}`
        live.classList.remove('down')
    } catch (e) {
        live.textContent = `the router does not answer: ${e.message}`
        live.classList.add('down')
    }
}

function start() {
    afterChange(poll)
    renderLegend()
    document.querySelector('#access').textContent = canChange
        ? 'You may change things here (the token came with the address).'
        : 'Read-only: open the address `weft ui` prints to change things.'
    const form = document.querySelector('#connect-form')
    form.querySelector('button').disabled = !canChange
    form.addEventListener('submit', event => {
        event.preventDefault()
        const address = document.querySelector('#connect-address').value.trim()
        change(() => api('POST', '/connect', { peers: [address] }), document.querySelector('#connect-error'))
    })
    poll()
    setInterval(poll, POLL_MS)
}

start()
