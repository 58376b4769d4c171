// What every part of the page shares: the token, the API, and making
// elements without HTML strings (nothing the router says is ever parsed
// as markup).

function takeToken() {
    const match = /(?:^#|&)token=([0-9a-f]+)/.exec(location.hash)
    if (match) {
        sessionStorage.setItem('weft-token', match[1])
        history.replaceState(null, '', location.pathname + location.search)
    }
    return sessionStorage.getItem('weft-token')
}

const token = takeToken()

// One request to the API; resolves to the parsed JSON (or text), rejects
// with the router's own words on a refusal, so a control can show them.
export async function api(method, path, body) {
    const headers = {}
    if (token) headers.Authorization = `Bearer ${token}`
    if (body !== undefined) headers['Content-Type'] = 'application/json'
    const response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
    })
    const text = await response.text()
    if (!response.ok) {
        throw new Error(text.trim() || `${response.status} ${response.statusText}`)
    }
    const type = response.headers.get('content-type') || ''
    return type.startsWith('application/json') ? JSON.parse(text) : text
}

export const canChange = Boolean(token)

export function el(tag, props = {}, ...children) {
    const node = document.createElement(tag)
    for (const [key, value] of Object.entries(props)) {
        if (key === 'dataset') Object.assign(node.dataset, value)
        else if (key === 'class') node.className = value
        else node[key] = value
    }
    for (const child of children.flat()) {
        if (child !== null && child !== undefined) {
            node.append(child instanceof Node ? child : String(child))
        }
    }
    return node
}

let refresh = async () => {}

// What to do after a change the router took (draw again at once).
export function afterChange(f) {
    refresh = f
}

// Runs a change; the router's refusal is shown in `output`, next to the
// control that asked.
export async function change(action, output) {
    output.textContent = ''
    output.classList.remove('shown')
    try {
        await action()
        await refresh()
        return true
    } catch (e) {
        output.textContent = e.message
        output.classList.add('shown')
        return false
    }
}

// Bits per second, three significant digits: 4.9 kbit/s, 12.3 Mbit/s.
export function rateText(bps) {
    for (const [scale, unit] of [[1e9, 'G'], [1e6, 'M'], [1e3, 'k']]) {
        if (bps >= scale) return `${Number((bps / scale).toPrecision(3))} ${unit}bit/s`
    }
    return `${Math.round(bps)} bit/s`
}
