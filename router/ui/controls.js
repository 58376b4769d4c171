// Conditions per container, as Synthetic Network's page sets them:
// sliders on logarithmic scales for rate and delay, percent for loss and
// jitter strength, a box for reorder, each with a field for an exact
// value. Every change goes to the router, which validates it as it
// validates the API's; its refusal is shown beside the control.

import { api, canChange, change, el, rateText } from './util.js'

const DIRECTIONS = ['ingress', 'egress']

// A slider's positions and the value each stands for.
const SCALES = {
    // 10 kbit/s to 10 Gbit/s; the last position is no limit.
    rate: {
        max: 200,
        value: i => (i >= 200 ? null : Math.round(1e4 * 1e6 ** (i / 199))),
        show: v => (v === null ? 'no limit' : rateText(v)),
        unit: 'bit/s',
        fromField: text => (text.trim() === '' ? null : Number(text)),
        toField: v => (v === null ? '' : String(v)),
    },
    // 0, then 1 ms to 2 s.
    latency: delayScale(),
    jitter: delayScale(),
    loss: percentScale(),
    jitter_strength: percentScale(),
}

function delayScale() {
    return {
        max: 100,
        value: i => (i === 0 ? 0 : Math.round(2000 ** ((i - 1) / 99))),
        show: v => `${v} ms`,
        unit: 'ms',
        fromField: Number,
        toField: String,
    }
}

function percentScale() {
    return {
        max: 100,
        value: i => i / 100,
        show: v => `${Math.round(v * 1000) / 10}%`,
        unit: '%',
        fromField: text => Number(text) / 100,
        toField: v => String(Math.round(v * 1000) / 10),
    }
}

// The slider position nearest a value.
function positionOf(scale, v) {
    let best = 0
    for (let i = 0; i <= scale.max; i++) {
        const here = scale.value(i)
        if (here === v) return i
        if (here !== null && v !== null && Math.abs(here - v) < Math.abs(scale.value(best) - v)) best = i
        if (v === null && here === null) return i
    }
    return best
}

const LABELS = {
    rate: 'Rate', latency: 'Latency', jitter: 'Jitter', loss: 'Loss', jitter_strength: 'Jitter strength',
}

// What a container suffers, in a few words.
export function describeConditions(c) {
    const link = c.conditions?.default_link ?? {}
    const parts = []
    for (const way of DIRECTIONS) {
        const q = link[way] ?? {}
        const said = []
        if (q.rate !== undefined && q.rate !== null) said.push(rateText(q.rate))
        if (q.latency) said.push(`${q.latency} ms`)
        if (q.jitter) said.push(`±${q.jitter} ms`)
        if (q.loss) said.push(`${Math.round(q.loss * 1000) / 10}% loss`)
        if (q.reorder) said.push('reorder')
        if (said.length) parts.push(`${way}: ${said.join(', ')}`)
    }
    const rules = c.conditions?.flows?.length ?? 0
    if (rules) parts.push(`${rules} flow rule${rules > 1 ? 's' : ''}`)
    return parts.length ? `${parts.join('; ')} (${c.conditioned_by ?? 'pending'})` : 'none'
}

export class ConditionEditor {
    constructor(root) {
        this.root = root
        this.container = null
    }

    open(container) {
        this.container = container
        this.root.hidden = false
        this.draw()
    }

    close() {
        this.container = null
        this.root.hidden = true
        this.root.replaceChildren()
    }

    // The container left: the editor goes with it.
    refresh(containers) {
        if (!this.container) return
        const now = containers.find(c => c.id === this.container.id)
        if (!now) this.close()
        else this.container = now
    }

    // What the editor would send: the container's conditions with the
    // default link's fields from the controls (flow rules and fields the
    // page has no control for kept as they were).
    conditions() {
        const conditions = structuredClone(this.container.conditions ?? {})
        conditions.default_link ??= {}
        conditions.flows ??= []
        for (const way of DIRECTIONS) {
            const q = conditions.default_link[way] ?? {}
            for (const [field, control] of Object.entries(this.controls[way])) {
                if (field === 'reorder') q.reorder = control.checked
                else q[field] = control.current
            }
            if (q.rate === null) delete q.rate
            conditions.default_link[way] = q
        }
        return conditions
    }

    async apply() {
        for (const output of DIRECTIONS.flatMap(way => Object.values(this.errors[way]))) {
            output.textContent = ''
            output.classList.remove('shown')
        }
        const id = this.container.id
        const body = this.conditions()
        const ok = await change(() => api('POST', `/conditions/${encodeURIComponent(id)}`, body), this.errorFor(null))
        if (!ok) this.placeError()
        else this.container = { ...this.container, conditions: body }
    }

    // The router names the field it refused (default_link.egress.loss):
    // the message moves next to that control.
    placeError() {
        const general = this.errorFor(null)
        const match = /default_link\.(ingress|egress)\.(\w+)/.exec(general.textContent)
        if (!match) return
        const row = this.errors[match[1]]?.[match[2]]
        if (!row) return
        row.textContent = general.textContent
        row.classList.add('shown')
        general.textContent = ''
        general.classList.remove('shown')
    }

    errorFor(way, field) {
        return way ? this.errors[way][field] : this.general
    }

    draw() {
        const c = this.container
        const link = c.conditions?.default_link ?? {}
        this.controls = {}
        this.errors = {}
        this.general = el('output', { class: 'error' })
        const columns = DIRECTIONS.map(way => {
            const q = link[way] ?? {}
            this.controls[way] = {}
            this.errors[way] = {}
            const rows = Object.keys(SCALES).map(field => this.sliderRow(way, field, q))
            const reorder = el('input', { type: 'checkbox', checked: Boolean(q.reorder), disabled: !canChange,
                dataset: { container: c.id, direction: way, field: 'reorder' } })
            reorder.addEventListener('change', () => this.apply())
            this.controls[way].reorder = reorder
            rows.push(el('tr', {}, el('td', {}, el('label', {}, 'Reorder')), el('td', {}, reorder)))
            return el('div', { class: 'direction' }, el('h4', {}, way === 'ingress' ? '↓ Ingress' : '↑ Egress'),
                el('table', {}, el('tbody', {}, rows)))
        })
        const clear = el('button', { type: 'button', disabled: !canChange }, 'Clear all')
        clear.addEventListener('click', async () => {
            await change(() => api('DELETE', `/conditions/${encodeURIComponent(c.id)}`), this.general)
            this.container = { ...this.container, conditions: {} }
            this.draw()
        })
        const close = el('button', { type: 'button' }, 'Close')
        close.addEventListener('click', () => this.close())
        this.root.replaceChildren(
            el('h3', {}, `Conditions of ${c.id}`),
            el('div', { class: 'directions' }, columns),
            el('p', {}, clear, ' ', close, ' ', this.general))
    }

    sliderRow(way, field, q) {
        const scale = SCALES[field]
        const given = q[field] ?? (field === 'rate' ? null : field === 'jitter_strength' ? 1 : 0)
        const slider = el('input', { type: 'range', min: 0, max: scale.max, step: 1, disabled: !canChange,
            value: positionOf(scale, given), dataset: { container: this.container.id, direction: way, field } })
        const exact = el('input', { type: 'text', size: 9, disabled: !canChange, value: scale.toField(given),
            dataset: { direction: way, field, exact: '' } })
        const shown = el('output', { class: 'value' }, scale.show(given))
        const error = el('output', { class: 'error', dataset: { direction: way, field } })
        const control = { current: given }
        this.controls[way][field] = control
        this.errors[way][field] = error
        slider.addEventListener('input', () => {
            control.current = scale.value(Number(slider.value))
            shown.textContent = scale.show(control.current)
            exact.value = scale.toField(control.current)
        })
        slider.addEventListener('change', () => this.apply())
        // An exact value goes to the router as typed, right or wrong: its
        // answer is the validation.
        exact.addEventListener('change', () => {
            control.current = scale.fromField(exact.value)
            shown.textContent = scale.show(control.current)
            if (control.current !== null && !Number.isNaN(control.current)) slider.value = positionOf(scale, control.current)
            this.apply()
        })
        return el('tr', {},
            el('td', {}, el('label', {}, LABELS[field])),
            el('td', {}, slider),
            el('td', {}, shown),
            el('td', {}, exact, ` ${scale.unit}`),
            el('td', {}, error))
    }
}
